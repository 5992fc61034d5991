using Confluent.Kafka;
using Herald.Kafka.Transport;

namespace Herald.Kafka.Tests;

public sealed class PartitionProgressTests
{
    private static readonly TopicPartition Partition = new("orders", 0);

    [Fact]
    public void Finish_OutOfOrder_CommitsOnlyOverTheContiguousRunOfFinishedOffsets()
    {
        using var progress = new PartitionProgress(Partition, CancellationToken.None);
        var entries = new[] { 10L, 11, 12, 13 }.Select(progress.Take).ToList();

        progress.Finish(entries[1], settled: true);
        progress.Finish(entries[3], settled: true);
        Assert.Null(progress.ToCommit());

        progress.Finish(entries[0], settled: true);
        Assert.Equal(12, progress.ToCommit()!.Offset.Value);
        progress.MarkCommitted(12);
        Assert.Null(progress.ToCommit());

        progress.Finish(entries[2], settled: true);
        Assert.Equal(14, progress.ToCommit()!.Offset.Value);
    }

    [Fact]
    public void Finish_Unsettled_HoldsTheCommitBackForGood()
    {
        using var progress = new PartitionProgress(Partition, CancellationToken.None);
        var first = progress.Take(0);
        var second = progress.Take(1);

        progress.Finish(first, settled: false);
        progress.Finish(second, settled: true);

        Assert.Null(progress.ToCommit());
        Assert.Equal(2, progress.Held);
    }

    [Fact]
    public void Revoke_WithEverythingFinished_ReturnsWhatWasSettled_WithoutWaiting()
    {
        using var progress = new PartitionProgress(Partition, CancellationToken.None);
        var done = progress.Take(5);
        progress.Finish(done, settled: true);

        var offset = progress.Revoke(TimeSpan.FromSeconds(10), commit: true);

        Assert.Equal(6, offset!.Offset.Value);
        Assert.True(progress.IsRevoked);
        Assert.Null(progress.ToCommit());
        Assert.False(progress.Abandoned.IsCancellationRequested);
    }

    [Fact]
    public async Task Revoke_LetsTakenMessagesThatHadNotStartedRun_SoTheirOffsetsCommitToo()
    {
        using var progress = new PartitionProgress(Partition, CancellationToken.None);
        var running = progress.Take(0);
        var waiting = progress.Take(1);

        var revoking = Task.Run(() => progress.Revoke(TimeSpan.FromSeconds(30), commit: true));
        progress.Finish(running, settled: true);
        Assert.True(progress.CanStart, "a message taken before the revocation still runs");
        progress.Finish(waiting, settled: true);

        var offset = await revoking.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.Equal(2, offset!.Offset.Value);
        Assert.Equal(0, progress.UnfinishedAtTimeout);
        Assert.Equal(0, progress.Held);
    }

    [Fact]
    public async Task Revoke_WaitsForTheRunningHandler_AndCommitsItWhenItFinishesInTime()
    {
        using var progress = new PartitionProgress(Partition, CancellationToken.None);
        var running = progress.Take(0);

        var revoking = Task.Run(() => progress.Revoke(TimeSpan.FromSeconds(30), commit: true));
        Assert.False(revoking.IsCompleted);
        progress.Finish(running, settled: true);

        var offset = await revoking.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.Equal(1, offset!.Offset.Value);
        Assert.False(progress.Abandoned.IsCancellationRequested);
    }

    [Fact]
    public async Task Revoke_PastTheTimeout_AbandonsTheHandler_AndCommitsNothingOfIt()
    {
        using var progress = new PartitionProgress(Partition, CancellationToken.None);
        var running = progress.Take(0);
        var waiting = progress.Take(1);
        var handler = Task.Run(async () =>
        {
            // A handler that only stops when cancelled, and then leaves its message unsettled.
            await Task.Delay(Timeout.Infinite, progress.Abandoned).ContinueWith(_ => { }, TaskScheduler.Default);
            progress.Finish(running, settled: false);

            // Behind it in its lane: the worker finds the partition abandoned and does not start it.
            progress.Finish(waiting, settled: false);
        });

        var offset = progress.Revoke(TimeSpan.FromMilliseconds(50), commit: true);

        Assert.Null(offset);
        Assert.True(progress.Abandoned.IsCancellationRequested);
        Assert.False(progress.CanStart, "nothing starts on an abandoned partition");
        Assert.Equal(2, progress.UnfinishedAtTimeout);
        await handler.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.Equal(2, progress.Held);
    }

    [Fact]
    public void Revoke_OfALostPartition_AbandonsAtOnce_AndCommitsNothing()
    {
        using var progress = new PartitionProgress(Partition, CancellationToken.None);
        var done = progress.Take(0);
        progress.Finish(done, settled: true);

        Assert.Null(progress.Revoke(TimeSpan.FromSeconds(10), commit: false));
    }

    [Fact]
    public void Take_PastTheFirstRingSize_KeepsEachOffsetInItsPlace_Issue14()
    {
        // The offsets are held in a ring that grows; finishing out of order across the growth must commit exactly as a list would.
        using var progress = new PartitionProgress(Partition, CancellationToken.None);
        var entries = Enumerable.Range(0, 50).Select(i => progress.Take(1_000 + i)).ToList();
        foreach (var entry in entries.Skip(1).Take(30))
        {
            progress.Finish(entry, settled: true);
        }

        entries.AddRange(Enumerable.Range(50, 250).Select(i => progress.Take(1_000 + i)));
        Assert.Null(progress.ToCommit());

        progress.Finish(entries[0], settled: true);
        Assert.Equal(1_031, progress.ToCommit()!.Offset.Value);

        foreach (var entry in entries.Skip(31).Reverse())
        {
            progress.Finish(entry, settled: true);
        }

        Assert.Equal(1_300, progress.ToCommit()!.Offset.Value);

        // Finishing one twice changes nothing, before or after its offset was passed over.
        progress.Finish(entries[0], settled: false);
        progress.Finish(entries[^1], settled: false);
        var next = progress.Take(1_300);
        progress.Finish(next, settled: true);
        progress.Finish(next, settled: false);
        Assert.Equal(1_301, progress.ToCommit()!.Offset.Value);
    }
}
