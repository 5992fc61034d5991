using Herald.Internal;

namespace Herald.Tests.Internal;

/// <summary>The core's group committer (issue 9): callers share commits, each keeps its own outcome.</summary>
public sealed class GroupCommitterTests
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(10);

    [Fact]
    public async Task ItemsQueuedWhileTheWriterIsBusy_CommitTogether_InQueueOrder()
    {
        var writer = new RecordingWriter();
        await using var committer = new GroupCommitter<Item>(new GroupCommitOptions(), () => writer);
        var first = new Item(1);
        await committer.EnqueueAsync(first, CancellationToken.None);
        await writer.Started.Task.WaitAsync(Timeout);

        var queued = Enumerable.Range(2, 10).Select(i => new Item(i)).ToList();
        foreach (var item in queued)
        {
            await committer.EnqueueAsync(item, CancellationToken.None);
        }

        writer.Release.SetResult();
        await Task.WhenAll(queued.Select(i => i.Done.Task)).WaitAsync(Timeout);

        Assert.Equal([[1], [.. Enumerable.Range(2, 10)]], writer.Groups);
    }

    [Fact]
    public async Task AGroup_StaysWithinItsCountAndWeight_AndAHeavierItemGoesAlone()
    {
        var writer = new RecordingWriter();
        await using var committer = new GroupCommitter<Item>(new GroupCommitOptions { MaxItems = 3, MaxWeight = 10 }, () => writer);
        await committer.EnqueueAsync(new Item(0), CancellationToken.None);
        await writer.Started.Task.WaitAsync(Timeout);

        Item[] queued = [new(1, weight: 4), new(2, weight: 4), new(3, weight: 4), new(4, weight: 50), new(5), new(6), new(7), new(8)];
        foreach (var item in queued)
        {
            await committer.EnqueueAsync(item, CancellationToken.None);
        }

        writer.Release.SetResult();
        await Task.WhenAll(queued.Select(i => i.Done.Task)).WaitAsync(Timeout);

        Assert.Equal([[0], [1, 2], [3], [4], [5, 6, 7], [8]], writer.Groups);
    }

    [Fact]
    public async Task AnItemCancelledWhileQueued_IsCancelled_AndNeverReachesTheWriter()
    {
        var writer = new RecordingWriter();
        await using var committer = new GroupCommitter<Item>(new GroupCommitOptions(), () => writer);
        await committer.EnqueueAsync(new Item(0), CancellationToken.None);
        await writer.Started.Task.WaitAsync(Timeout);
        using var cancel = new CancellationTokenSource();
        var cancelled = new Item(1, cancellationToken: cancel.Token);
        var kept = new Item(2);
        await committer.EnqueueAsync(cancelled, CancellationToken.None);
        await committer.EnqueueAsync(kept, CancellationToken.None);

        await cancel.CancelAsync();
        writer.Release.SetResult();

        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => cancelled.Done.Task.WaitAsync(Timeout));
        await kept.Done.Task.WaitAsync(Timeout);
        Assert.Equal([[0], [2]], writer.Groups);
    }

    [Fact]
    public async Task AWriterThatThrows_FailsTheCallersOfItsGroup_AndTheNextGroupStillRuns()
    {
        var writer = new RecordingWriter { FailOn = 1 };
        await using var committer = new GroupCommitter<Item>(new GroupCommitOptions(), () => writer);
        writer.Release.SetResult();
        var failing = new Item(1);
        await committer.EnqueueAsync(failing, CancellationToken.None);
        var failure = await Assert.ThrowsAsync<InvalidOperationException>(() => failing.Done.Task.WaitAsync(Timeout));

        var next = new Item(2);
        await committer.EnqueueAsync(next, CancellationToken.None);
        await next.Done.Task.WaitAsync(Timeout);
        Assert.Equal("the writer broke", failure.Message);
    }

    [Fact]
    public async Task Dispose_CommitsWhatIsQueued_DisposesTheWriters_AndThenRefusesWork()
    {
        var writer = new RecordingWriter();
        var committer = new GroupCommitter<Item>(new GroupCommitOptions { OwnerName = "store", DisposedMessage = "gone" }, () => writer);
        writer.Release.SetResult();
        var queued = Enumerable.Range(1, 5).Select(i => new Item(i)).ToList();
        foreach (var item in queued)
        {
            await committer.EnqueueAsync(item, CancellationToken.None);
        }

        await committer.DisposeAsync();

        Assert.All(queued, i => Assert.True(i.Done.Task.IsCompletedSuccessfully));
        Assert.True(writer.Disposed);
        var refused = await Assert.ThrowsAsync<ObjectDisposedException>(() => committer.EnqueueAsync(new Item(6), CancellationToken.None).AsTask());
        Assert.Equal("store", refused.ObjectName);
    }

    private sealed class Item(int id, long weight = 1, CancellationToken cancellationToken = default) : IGroupCommitItem
    {
        public int Id { get; } = id;

        public TaskCompletionSource Done { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public CancellationToken CancellationToken { get; } = cancellationToken;

        public long Weight { get; } = weight;

        public void Cancel() => Done.TrySetCanceled(CancellationToken);

        public void Fail(Exception exception) => Done.TrySetException(exception);
    }

    // Holds its first group until released, so what arrives meanwhile queues up; records every group it commits.
    private sealed class RecordingWriter : IGroupCommitWriter<Item>
    {
        public TaskCompletionSource Started { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public TaskCompletionSource Release { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public List<int[]> Groups { get; } = [];

        public int? FailOn { get; init; }

        public bool Disposed { get; private set; }

        public async ValueTask CommitAsync(GroupCommitBatch<Item> batch)
        {
            Started.TrySetResult();
            await Release.Task;
            var ids = batch.Items.Select(i => i.Id).ToArray();
            Groups.Add(ids);
            if (ids.Contains(FailOn ?? -1))
            {
                throw new InvalidOperationException("the writer broke");
            }

            foreach (var item in batch.Items)
            {
                item.Done.TrySetResult();
            }
        }

        public ValueTask DisposeAsync()
        {
            Disposed = true;
            return ValueTask.CompletedTask;
        }
    }
}
