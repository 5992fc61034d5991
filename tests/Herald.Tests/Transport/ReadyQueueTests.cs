using Herald.Messages;
using Herald.Transport.InMemory;

namespace Herald.Tests.Transport;

/// <summary>The in-memory queue's ready messages: a channel for sends, with hand-backs read first.</summary>
public sealed class ReadyQueueTests
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(10);

    /// <summary>
    /// Hand-backs go before what is still in the channel, each at its place by position, whichever batch came back first
    /// and in whatever order a batch lists them. Regression (review 45): each batch went in front of the earlier ones, so
    /// two consumers' hand-backs came out the latest batch first.
    /// </summary>
    [Fact]
    public void HandBacks_AreReadFirst_InTheOrderTheQueueGaveThemOut_WhicheverBatchCameBackFirst_AndTheWakeUpIsNotCounted()
    {
        var ready = new ReadyQueue();
        var (a, b, c, d, e) = (New("a"), New("b"), New("c"), New("d"), New("e"));
        foreach (var envelope in (Envelope[])[a, b, c, d, e])
        {
            ready.Add(envelope);
        }

        var taken = new QueuedEnvelope[4];
        for (var i = 0; i < taken.Length; i++)
        {
            Assert.True(ready.TryReadQueued(out taken[i]));
        }

        ready.AddToFront([taken[0], taken[1]]);
        ready.AddToFront([taken[3], taken[2]]);

        Assert.Equal(5, ready.Count);
        Assert.Equal([a, b, c, d, e], ReadAll(ready));
        Assert.Equal(0, ready.Count);
        Assert.False(ready.TryRead(out _));
    }

    [Fact]
    public async Task AReaderWaitingOnAnEmptyQueue_IsWokenByAHandBack()
    {
        var ready = new ReadyQueue();
        var waiting = ready.WaitToReadAsync(CancellationToken.None).AsTask();
        Assert.False(waiting.IsCompleted);

        var handedBack = New("a");
        ready.AddToFront([new QueuedEnvelope(handedBack, 1)]);

        Assert.True(await waiting.WaitAsync(Timeout));
        Assert.True(ready.TryRead(out var read));
        Assert.Same(handedBack, read);
        Assert.False(ready.TryRead(out _));
        Assert.Equal(0, ready.Count);
    }

    [Fact]
    public async Task WaitToReadAsync_WithACancelledToken_IsCancelled_EvenWithHandBacksWaiting()
    {
        var ready = new ReadyQueue();
        ready.AddToFront([new QueuedEnvelope(New("a"), 1)]);

        await Assert.ThrowsAnyAsync<OperationCanceledException>(
            async () => await ready.WaitToReadAsync(new CancellationToken(canceled: true)));
        Assert.Equal(1, ready.Count);
    }

    private static List<Envelope> ReadAll(ReadyQueue ready)
    {
        var read = new List<Envelope>();
        while (ready.TryRead(out var envelope))
        {
            read.Add(envelope);
        }

        return read;
    }

    private static Envelope New(string type) => new()
    {
        MessageId = Guid.CreateVersion7(),
        MessageType = type,
        Time = DateTimeOffset.UnixEpoch,
        Body = "{}"u8.ToArray(),
    };
}
