using System.Diagnostics;
using System.Threading.Channels;

namespace Herald.Internal;

/// <summary>
/// Shares commits between concurrent callers (group commit). Callers queue their work in a bounded channel; one loop
/// takes whatever is waiting (up to a count and a weight budget, never waiting for more unless a group delay is set) and
/// hands it as one group to an idle <see cref="IGroupCommitWriter{TItem}"/>, which commits it once and completes each
/// caller with its own outcome; work that arrives meanwhile forms the next group, for the next idle writer. So one commit
/// (one disk sync, one round trip) serves many callers under load, while a lone caller waits for nobody. Of the idle
/// writers the first always takes the group, so a load that one writer keeps up with stays on one writer (and its
/// connection) and the others only join when groups overlap. Used by the event stores' appends, the queues' sends and
/// the SQLite writer. With <see cref="GroupCommitOptions.Linger"/> the loop, woken to fewer items than the previous group
/// held, waits a moment for the rest: closed-loop callers whose group just committed queue their next item within
/// microseconds, and taking the first of them alone would split one full group into a small one and a second commit. An
/// extension point for adapter packages, not for application code.
/// </summary>
/// <typeparam name="TItem">The queued work.</typeparam>
public sealed class GroupCommitter<TItem> : IAsyncDisposable
    where TItem : class, IGroupCommitItem
{
    private readonly Channel<TItem> _queue;
    private readonly GroupCommitOptions _options;
    private readonly Slot[] _slots;

    // One permit per idle writer: the loop takes a group only once a writer can commit it.
    private readonly SemaphoreSlim _idle;
    private readonly Task _loop;

    // Items in the group taken last: how many a lingering loop waits for.
    private int _lastGroup;

    /// <summary>Starts the loop and <see cref="GroupCommitOptions.Writers"/> writers from <paramref name="createWriter"/>.</summary>
    public GroupCommitter(GroupCommitOptions options, Func<IGroupCommitWriter<TItem>> createWriter)
    {
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(createWriter);
        ArgumentOutOfRangeException.ThrowIfLessThan(options.Writers, 1, nameof(options));
        ArgumentOutOfRangeException.ThrowIfLessThan(options.MaxItems, 1, nameof(options));
        ArgumentOutOfRangeException.ThrowIfLessThan(options.Linger, TimeSpan.Zero, nameof(options));
        _options = options;
        _queue = Channel.CreateBounded<TItem>(new BoundedChannelOptions(options.QueueCapacity)
        {
            FullMode = BoundedChannelFullMode.Wait,
            SingleReader = true,
        });
        _slots = new Slot[options.Writers];
        for (var i = 0; i < _slots.Length; i++)
        {
            _slots[i] = new Slot(createWriter(), new GroupCommitBatch<TItem>(_queue.Reader, options));
        }

        _idle = new SemaphoreSlim(_slots.Length, _slots.Length);
        _loop = Task.Run(RunAsync);
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

    /// <summary>Stops taking work, commits what is already queued and waits for the loop and its writers to end.</summary>
    public async ValueTask DisposeAsync()
    {
        _queue.Writer.TryComplete();
        await _loop.ConfigureAwait(false);
        _idle.Dispose();
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
        var reader = _queue.Reader;
        var delay = _options.GroupDelay;
        try
        {
            while (await reader.WaitToReadAsync().ConfigureAwait(false))
            {
                if (delay > TimeSpan.Zero && reader.Count < _options.MaxItems)
                {
                    await Task.Delay(delay, _options.TimeProvider).ConfigureAwait(false);
                }

                await _idle.WaitAsync().ConfigureAwait(false);
                if (_options.Linger > TimeSpan.Zero)
                {
                    Linger(reader);
                }

                // The first idle writer, chosen after the linger: the one whose group just committed is idle again by then.
                var slot = Array.Find(_slots, s => !s.Busy)!;
                if (!slot.Batch.TryTakeNext())
                {
                    _idle.Release();
                    continue;
                }

                _lastGroup = slot.Batch.Items.Count;
                slot.Busy = true;
                slot.Running = CommitAsync(slot);
            }
        }
        finally
        {
            foreach (var slot in _slots)
            {
                await slot.Running.ConfigureAwait(false);
                await slot.Writer.DisposeAsync().ConfigureAwait(false);
            }
        }
    }

    private async Task CommitAsync(Slot slot)
    {
        try
        {
            await slot.Writer.CommitAsync(slot.Batch).ConfigureAwait(false);
        }
        catch (Exception ex)
        {
            // A writer should complete every item itself; if it throws, its callers learn why instead of waiting forever.
            slot.Batch.Fail(ex);
        }
        finally
        {
            slot.Busy = false;
            _idle.Release();
        }
    }

    // Waits, polling the queue and yielding the processor between looks, until as many items wait as the last group held
    // or the linger is over. Far shorter than a timer's tick, so no timer; a lone caller (groups of one) never waits, nor
    // does a loop that finds nothing queued.
    private void Linger(ChannelReader<TItem> reader)
    {
        var expected = Math.Min(_lastGroup, _options.MaxItems);
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

    // A writer with the batch it fills and commits; busy from taking a group until its commit ended.
    private sealed class Slot(IGroupCommitWriter<TItem> writer, GroupCommitBatch<TItem> batch)
    {
        public IGroupCommitWriter<TItem> Writer { get; } = writer;

        public GroupCommitBatch<TItem> Batch { get; } = batch;

        public volatile bool Busy;

        public Task Running = Task.CompletedTask;
    }
}
