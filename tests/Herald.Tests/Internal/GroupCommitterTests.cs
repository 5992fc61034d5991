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

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    public async Task WithALinger_ALoopWokenToFewerItemsThanTheLastGroup_WaitsForTheRest(int writers)
    {
        var writer = new RecordingWriter();
        await using var committer = new GroupCommitter<Item>(new GroupCommitOptions { Writers = writers, Linger = TimeSpan.FromSeconds(5) }, () => writer);

        // Every loop busy with a group of one (held by the writer), then three queued: they form the next group.
        for (var i = 0; i < writers; i++)
        {
            await committer.EnqueueAsync(new Item(100 + i), CancellationToken.None);
            Assert.True(await writer.Entries.WaitAsync(Timeout));
        }

        Item[] three = [new(1), new(2), new(3)];
        foreach (var item in three)
        {
            await committer.EnqueueAsync(item, CancellationToken.None);
        }

        writer.Release.SetResult();
        await Task.WhenAll(three.Select(i => i.Done.Task)).WaitAsync(Timeout);

        // The last group held three: one item alone is held back (well within the linger), by every loop, until two more
        // arrive.
        var lone = new Item(4);
        await committer.EnqueueAsync(lone, CancellationToken.None);
        var early = await Task.WhenAny(lone.Done.Task, Task.Delay(TimeSpan.FromMilliseconds(300)));
        Assert.NotSame(lone.Done.Task, early);
        Item[] rest = [new(5), new(6)];
        foreach (var item in rest)
        {
            await committer.EnqueueAsync(item, CancellationToken.None);
        }

        await Task.WhenAll(rest.Select(i => i.Done.Task).Append(lone.Done.Task)).WaitAsync(Timeout);
        Assert.Contains(writer.Groups, g => g.SequenceEqual([1, 2, 3]));
        Assert.Equal([4, 5, 6], writer.Groups[^1]);
        Assert.Equal(writers + 2, writer.Groups.Count);
    }

    [Fact]
    public async Task WithALinger_WhenTheRestDoNotCome_TheSmallerGroupGoesOnceTheLingerIsOver()
    {
        var writer = new RecordingWriter();
        await using var committer = new GroupCommitter<Item>(new GroupCommitOptions { Linger = TimeSpan.FromMilliseconds(20) }, () => writer);
        await committer.EnqueueAsync(new Item(0), CancellationToken.None);
        await writer.Started.Task.WaitAsync(Timeout);
        Item[] firstGroup = [new(1), new(2), new(3)];
        foreach (var item in firstGroup)
        {
            await committer.EnqueueAsync(item, CancellationToken.None);
        }

        writer.Release.SetResult();
        await Task.WhenAll(firstGroup.Select(i => i.Done.Task)).WaitAsync(Timeout);

        var lone = new Item(4);
        await committer.EnqueueAsync(lone, CancellationToken.None);
        await lone.Done.Task.WaitAsync(Timeout);

        // Then its group of one sets what the next wait is for: a lone caller goes at once from there on.
        var next = new Item(5);
        await committer.EnqueueAsync(next, CancellationToken.None);
        await next.Done.Task.WaitAsync(Timeout);
        Assert.Equal([[0], [1, 2, 3], [4], [5]], writer.Groups);
    }

    [Fact]
    public async Task WithTwoWriters_GroupsThatDoNotOverlap_AllGoToTheFirst_AndTheSecondJoinsOnlyWhileTheFirstIsBusy()
    {
        var writers = new List<RecordingWriter>();
        await using var committer = new GroupCommitter<Item>(new GroupCommitOptions { Writers = 2 }, () =>
        {
            var writer = new RecordingWriter();
            writer.Release.SetResult();
            writers.Add(writer);
            return writer;
        });

        // One caller at a time: each group commits before the next arrives, so the first writer (and its connection) takes
        // them all.
        for (var i = 0; i < 20; i++)
        {
            var item = new Item(i);
            await committer.EnqueueAsync(item, CancellationToken.None);
            await item.Done.Task.WaitAsync(Timeout);
        }

        Assert.Equal(20, writers[0].Groups.Count);
        Assert.Empty(writers[1].Groups);

        // The first writer held by its group: the next group goes to the second at once, without waiting for the first.
        var held = new RecordingWriter();
        var busy = new List<RecordingWriter>();
        await using var overlapping = new GroupCommitter<Item>(new GroupCommitOptions { Writers = 2 }, () =>
        {
            var writer = busy.Count == 0 ? held : new RecordingWriter();
            if (writer != held)
            {
                writer.Release.SetResult();
            }

            busy.Add(writer);
            return writer;
        });
        var first = new Item(100);
        await overlapping.EnqueueAsync(first, CancellationToken.None);
        await held.Started.Task.WaitAsync(Timeout);
        var second = new Item(101);
        await overlapping.EnqueueAsync(second, CancellationToken.None);
        await second.Done.Task.WaitAsync(Timeout);
        Assert.False(first.Done.Task.IsCompleted);
        Assert.Equal([[101]], busy[1].Groups);

        held.Release.SetResult();
        await first.Done.Task.WaitAsync(Timeout);
        Assert.Equal([[100]], held.Groups);
    }

    [Fact]
    public void ANegativeLinger_IsRefused()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => new GroupCommitter<Item>(new GroupCommitOptions { Linger = TimeSpan.FromTicks(-1) }, () => new RecordingWriter()));
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

        // Released as each commit starts.
        public SemaphoreSlim Entries { get; } = new(0);

        public int? FailOn { get; init; }

        public bool Disposed { get; private set; }

        public async ValueTask CommitAsync(GroupCommitBatch<Item> batch)
        {
            Started.TrySetResult();
            Entries.Release();
            await Release.Task;
            var ids = batch.Items.Select(i => i.Id).ToArray();
            lock (Groups)
            {
                Groups.Add(ids);
            }

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
