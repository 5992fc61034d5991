using System.Collections.Concurrent;
using Herald.Internal;

namespace Herald.AmazonSqs.Transport;

/// <summary>
/// Turns single calls on one queue into SQS batch calls of up to ten entries (<c>SendMessageBatch</c>, <c>DeleteMessageBatch</c>)
/// on the core's <see cref="GroupCommitter{TItem}"/>: a few loops per queue each take what is waiting, up to ten, and make
/// one call of it. Nothing waits for a batch to fill, so a lone call goes out at once; under load the calls share round trips.
/// </summary>
/// <typeparam name="TEntry">One call's entry.</typeparam>
internal sealed class SqsBatcher<TEntry> : IAsyncDisposable
{
    /// <summary>The most entries one SQS batch call takes.</summary>
    public const int MaxBatch = 10;

    // Lazy: GetOrAdd may run its factory twice in a race, and the loops of a committer that lost it would never end.
    private readonly ConcurrentDictionary<string, Lazy<GroupCommitter<Pending>>> _queues = new(StringComparer.Ordinal);
    private readonly Func<string, IReadOnlyList<Pending>, CancellationToken, Task> _flush;
    private readonly GroupCommitOptions _options;

    /// <param name="flush">
    /// Makes one batch call to the queue URL and completes each entry's task (an entry the call did not cover fails); no
    /// caller's token reaches it, since an entry taken into a call is no longer its caller's to cancel.
    /// </param>
    /// <param name="maxBytes">The most bytes (<see cref="RunAsync"/>'s <c>bytes</c>) one call carries; a larger entry goes alone.</param>
    public SqsBatcher(Func<string, IReadOnlyList<Pending>, CancellationToken, Task> flush, long maxBytes = long.MaxValue)
    {
        _flush = flush;
        _options = new GroupCommitOptions
        {
            Writers = 4,
            MaxItems = MaxBatch,
            MaxWeight = maxBytes,
            OwnerName = nameof(AmazonSqsTransport),
            DisposedMessage = "The SQS transport was disposed; the call was not made.",
        };
    }

    /// <summary>
    /// Queues the entry (of <paramref name="bytes"/> as SQS counts them) for the next batch of <paramref name="queueUrl"/>;
    /// completes when its call did (false: the entry's receipt was no longer valid).
    /// </summary>
    public async Task<bool> RunAsync(string queueUrl, TEntry entry, int bytes = 0)
    {
        var pending = new Pending(entry, bytes);
        var committer = _queues.GetOrAdd(queueUrl, url => new Lazy<GroupCommitter<Pending>>(() => new GroupCommitter<Pending>(_options, () => new Writer(this, url)))).Value;
        await committer.EnqueueAsync(pending, CancellationToken.None).ConfigureAwait(false);
        return await pending.Done.Task.ConfigureAwait(false);
    }

    /// <summary>Makes the calls already queued (a send that was accepted must not be dropped), then stops the loops.</summary>
    public async ValueTask DisposeAsync()
    {
        foreach (var committer in _queues.Values)
        {
            await committer.Value.DisposeAsync().ConfigureAwait(false);
        }
    }

    /// <summary>One call waiting for its batch.</summary>
    internal sealed class Pending(TEntry entry, int bytes) : IGroupCommitItem
    {
        public TEntry Entry { get; } = entry;

        public TaskCompletionSource<bool> Done { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public CancellationToken CancellationToken => CancellationToken.None;

        public long Weight => bytes;

        public void Cancel() => Done.TrySetCanceled();

        public void Fail(Exception exception) => Done.TrySetException(exception);
    }

    // One per loop of a queue: a batch is one call; the committer fails every entry of a call that threw.
    private sealed class Writer(SqsBatcher<TEntry> owner, string queueUrl) : IGroupCommitWriter<Pending>
    {
        public async ValueTask CommitAsync(GroupCommitBatch<Pending> batch)
        {
            await owner._flush(queueUrl, batch.Items, CancellationToken.None).ConfigureAwait(false);
            foreach (var pending in batch.Items)
            {
                pending.Done.TrySetException(new InvalidOperationException("The SQS batch call did not report this entry."));
            }
        }

        public ValueTask DisposeAsync() => ValueTask.CompletedTask;
    }
}
