using System.Diagnostics;
using System.Threading.Channels;

namespace Herald.Internal;

/// <summary>
/// Shares commits between concurrent callers (group commit). Callers queue their work in a bounded channel; each loop
/// takes whatever is waiting (up to a count and a weight budget, never waiting for more unless a group delay is set) and
/// hands it to its <see cref="IGroupCommitWriter{TItem}"/> as one group, which commits it once and completes each caller
/// with its own outcome; work that arrives meanwhile forms the next group. So one commit (one disk sync, one round trip)
/// serves many callers under load, while a lone caller waits for nobody. Used by the event stores' appends, the queues'
/// sends and the SQLite writer. With <see cref="GroupCommitOptions.Linger"/> a loop woken to fewer items than the
/// previous group held waits a moment for the rest: closed-loop callers whose group just committed queue their next item
/// within microseconds, and taking the first of them alone would split one full group into a small one and a second
/// commit. An extension point for adapter packages, not for application code.
/// </summary>
/// <typeparam name="TItem">The queued work.</typeparam>
public sealed class GroupCommitter<TItem> : IAsyncDisposable
    where TItem : class, IGroupCommitItem
{
    private readonly Channel<TItem> _queue;
    private readonly GroupCommitOptions _options;
    private readonly Func<IGroupCommitWriter<TItem>> _createWriter;
    private readonly Task[] _loops;

    // With a linger and more than one loop, loops take groups one at a time, so a loop that lingers for the rest of a
    // group is not undercut by another taking its first items alone.
    private readonly SemaphoreSlim? _taking;

    // Items in the group taken last, by any loop: how many a lingering loop waits for.
    private int _lastGroup;

    /// <summary>Starts <see cref="GroupCommitOptions.Writers"/> loops, each with a writer from <paramref name="createWriter"/>.</summary>
    public GroupCommitter(GroupCommitOptions options, Func<IGroupCommitWriter<TItem>> createWriter)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(createWriter);
        ArgumentOutOfRangeException.ThrowIfLessThan(options.Writers, 1, nameof(options));
        ArgumentOutOfRangeException.ThrowIfLessThan(options.MaxItems, 1, nameof(options));
        ArgumentOutOfRangeException.ThrowIfLessThan(options.Linger, TimeSpan.Zero, nameof(options));
        _options = options;
        _createWriter = createWriter;
        _queue = Channel.CreateBounded<TItem>(new BoundedChannelOptions(options.QueueCapacity)
        {
            FullMode = BoundedChannelFullMode.Wait,
            SingleReader = options.Writers == 1,
        });
        if (options.Linger > TimeSpan.Zero && options.Writers > 1)
        {
            _taking = new SemaphoreSlim(1, 1);
        }

        _loops = new Task[options.Writers];
        for (var i = 0; i < _loops.Length; i++)
        {
            _loops[i] = Task.Run(RunAsync);
        }
    }

    /// <summary>
    /// Queues <paramref name="item"/>, waiting for room while the queue is full; the item's own completion tells when its
    /// group has committed. Throws <see cref="ObjectDisposedException"/> once the committer stopped taking work.
    /// </summary>
    public ValueTask EnqueueAsync(TItem item, CancellationToken cancellationToken)
    {
        // Most calls find room: no state machine for them.
        return _queue.Writer.TryWrite(item) ? ValueTask.CompletedTask : EnqueueSlowAsync(item, cancellationToken);
    }

    /// <summary>Stops taking work, commits what is already queued and waits for the loops (and their writers) to end.</summary>
    public async ValueTask DisposeAsync()
    {
        _queue.Writer.TryComplete();
        await Task.WhenAll(_loops).ConfigureAwait(false);
        _taking?.Dispose();
    }

    private async ValueTask EnqueueSlowAsync(TItem item, CancellationToken cancellationToken)
    {
        try
        {
            await _queue.Writer.WriteAsync(item, cancellationToken).ConfigureAwait(false);
        }
        catch (ChannelClosedException)
        {
            throw new ObjectDisposedException(_options.OwnerName, _options.DisposedMessage);
        }
    }

    private async Task RunAsync()
    {
        var writer = _createWriter();
        await using (writer.ConfigureAwait(false))
        {
            var reader = _queue.Reader;
            var batch = new GroupCommitBatch<TItem>(reader, _options);
            var delay = _options.GroupDelay;
            while (await reader.WaitToReadAsync().ConfigureAwait(false))
            {
                if (delay > TimeSpan.Zero && reader.Count < _options.MaxItems)
                {
                    await Task.Delay(delay, _options.TimeProvider).ConfigureAwait(false);
                }

                if (!await TakeAsync(batch).ConfigureAwait(false))
                {
                    continue;
                }

                try
                {
                    await writer.CommitAsync(batch).ConfigureAwait(false);
                }
                catch (Exception ex)
                {
                    // A writer should complete every item itself; if it throws, its callers learn why instead of waiting forever.
                    batch.Fail(ex);
                }
            }
        }
    }

    private async ValueTask<bool> TakeAsync(GroupCommitBatch<TItem> batch)
    {
        if (_options.Linger <= TimeSpan.Zero)
        {
            return batch.TryTakeNext();
        }

        if (_taking is not null)
        {
            await _taking.WaitAsync().ConfigureAwait(false);
        }

        try
        {
            Linger(_queue.Reader);
            if (!batch.TryTakeNext())
            {
                return false;
            }

            Volatile.Write(ref _lastGroup, batch.Items.Count);
            return true;
        }
        finally
        {
            _taking?.Release();
        }
    }

    // Waits, polling the queue and yielding the processor between looks, until as many items wait as the last group held
    // or the linger is over. Far shorter than a timer's tick, so no timer; a lone caller (groups of one) never waits, nor
    // does a loop that finds nothing queued (another loop took it).
    private void Linger(ChannelReader<TItem> reader)
    {
        var expected = Math.Min(Volatile.Read(ref _lastGroup), _options.MaxItems);
        var queued = reader.Count;
        if (queued == 0 || queued >= expected)
        {
            return;
        }

        var start = Stopwatch.GetTimestamp();
        while (reader.Count < expected && Stopwatch.GetElapsedTime(start) < _options.Linger)
        {
            Thread.Yield();
        }
    }
}
