using System.Collections.Concurrent;
using System.Threading.Channels;

namespace Herald.AmazonSqs.Transport;

/// <summary>
/// Turns single calls on one queue into SQS batch calls of up to ten entries (<c>SendMessageBatch</c>, <c>DeleteMessageBatch</c>):
/// a few loops per queue each take what is waiting, up to ten, and make one call of it. Nothing waits for a batch to fill,
/// so a lone call goes out at once; under load the calls share round trips.
/// </summary>
/// <typeparam name="TEntry">One call's entry.</typeparam>
internal sealed class SqsBatcher<TEntry> : IAsyncDisposable
{
    /// <summary>The most entries one SQS batch call takes.</summary>
    public const int MaxBatch = 10;

    private const int LoopsPerQueue = 4;
    // Lazy: GetOrAdd may run its factory twice in a race, and loops started for a channel that lost it would never end.
    private readonly ConcurrentDictionary<string, Lazy<Channel<Pending>>> _queues = new(StringComparer.Ordinal);
    private readonly ConcurrentBag<Task> _loops = [];
    private readonly Func<string, IReadOnlyList<Pending>, CancellationToken, Task> _flush;
    private readonly CancellationTokenSource _disposing = new();

    /// <param name="flush">Makes one batch call to the queue URL and completes each entry's task (an entry the call did not cover fails).</param>
    public SqsBatcher(Func<string, IReadOnlyList<Pending>, CancellationToken, Task> flush) => _flush = flush;

    /// <summary>Queues the entry for the next batch of <paramref name="queueUrl"/>; completes when its call did (false: the entry's receipt was no longer valid).</summary>
    public Task<bool> RunAsync(string queueUrl, TEntry entry)
    {
        var pending = new Pending(entry, new TaskCompletionSource<bool>(TaskCreationOptions.RunContinuationsAsynchronously));
        var queue = _queues.GetOrAdd(queueUrl, url => new Lazy<Channel<Pending>>(() => Start(url))).Value;
        if (!queue.Writer.TryWrite(pending))
        {
            throw new ObjectDisposedException(nameof(SqsBatcher<TEntry>));
        }

        return pending.Done.Task;
    }

    public async ValueTask DisposeAsync()
    {
        foreach (var queue in _queues.Values)
        {
            queue.Value.Writer.TryComplete();
        }

        // Entries already queued still go out: a send that was accepted must not be dropped.
        await Task.WhenAll(_loops).ConfigureAwait(false);
        _disposing.Dispose();
    }

    private Channel<Pending> Start(string queueUrl)
    {
        var channel = Channel.CreateUnbounded<Pending>(new UnboundedChannelOptions { SingleWriter = false, SingleReader = false });
        for (var i = 0; i < LoopsPerQueue; i++)
        {
            _loops.Add(Task.Run(() => LoopAsync(queueUrl, channel.Reader)));
        }

        return channel;
    }

    private async Task LoopAsync(string queueUrl, ChannelReader<Pending> reader)
    {
        var batch = new List<Pending>(MaxBatch);
        while (await reader.WaitToReadAsync().ConfigureAwait(false))
        {
            batch.Clear();
            while (batch.Count < MaxBatch && reader.TryRead(out var pending))
            {
                batch.Add(pending);
            }

            if (batch.Count == 0)
            {
                continue;
            }

            try
            {
                await _flush(queueUrl, batch, _disposing.Token).ConfigureAwait(false);
            }
#pragma warning disable CA1031 // The failure belongs to the callers: each entry's task carries it.
            catch (Exception ex)
#pragma warning restore CA1031
            {
                foreach (var pending in batch)
                {
                    pending.Done.TrySetException(ex);
                }
            }

            foreach (var pending in batch)
            {
                pending.Done.TrySetException(new InvalidOperationException("The SQS batch call did not report this entry."));
            }
        }
    }

    /// <summary>One call waiting for its batch.</summary>
    internal sealed record Pending(TEntry Entry, TaskCompletionSource<bool> Done);
}
