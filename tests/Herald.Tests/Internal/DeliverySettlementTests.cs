using Herald.Internal;
using Herald.Messages;
using Herald.Tests.Reliability;
using Herald.Transport;
using Microsoft.Extensions.Logging.Abstractions;

namespace Herald.Tests.Internal;

/// <summary>Ack on return and nack on throw, the one copy every transport's consumer runs its deliveries through.</summary>
public sealed class DeliverySettlementTests
{
    [Fact]
    public async Task HandlerReturning_WithoutSettling_IsAcked()
    {
        var delivery = new TestDelivery();

        var settled = await DeliverySettlement.RunAsync((_, _) => ValueTask.CompletedTask, delivery, NullLogger.Instance, CancellationToken.None);

        Assert.True(settled);
        Assert.Equal(["ack"], delivery.Calls);
    }

    [Fact]
    public async Task HandlerSettlingItself_IsNotSettledAgain()
    {
        var delivery = new TestDelivery();

        await DeliverySettlement.RunAsync((d, ct) => d.NackAsync(TimeSpan.FromSeconds(5), ct), delivery, NullLogger.Instance, CancellationToken.None);

        Assert.Equal(["nack 00:00:05"], delivery.Calls);
    }

    [Fact]
    public async Task HandlerThrowing_IsNackedForRedeliveryAtOnce()
    {
        var delivery = new TestDelivery();

        var settled = await DeliverySettlement.RunAsync((_, _) => throw new InvalidOperationException("boom"), delivery, NullLogger.Instance, CancellationToken.None);

        Assert.True(settled);
        Assert.Equal(["nack 00:00:00"], delivery.Calls);
    }

    [Fact]
    public async Task HandlerThrowing_OnADeliveryTheTransportCouldNotDecode_MovesItToTheNativeDeadLetters()
    {
        var delivery = new TestDelivery(new MalformedMessageException("no type"));

        await DeliverySettlement.RunAsync((_, _) => throw new InvalidOperationException("boom"), delivery, NullLogger.Instance, CancellationToken.None);

        Assert.Equal(["dead-letter no type"], delivery.Calls);
    }

    [Fact]
    public async Task HandlerAbortedByShutdown_IsLeftUnsettled_ForTheConsumerToHandBack()
    {
        var delivery = new TestDelivery();
        using var aborting = new CancellationTokenSource();
        await aborting.CancelAsync();

        var settled = await DeliverySettlement.RunAsync((_, ct) => throw new OperationCanceledException(ct), delivery, NullLogger.Instance, aborting.Token);

        Assert.False(settled);
        Assert.False(delivery.IsSettled);
        Assert.Empty(delivery.Calls);
    }

    [Fact]
    public async Task NackFailing_IsSwallowed_SoTheConsumerGoesOn()
    {
        var delivery = new TestDelivery { FailSettling = true };

        var settled = await DeliverySettlement.RunAsync((_, _) => throw new InvalidOperationException("boom"), delivery, NullLogger.Instance, CancellationToken.None);

        Assert.True(settled);
        Assert.True(delivery.IsSettled);
    }

    [Fact]
    public async Task HandlerThrowing_AfterItsOwnSettlementFailed_IsLogged_NotSettledAgain()
    {
        // A failed settlement the handler started passed without a word: a message the transport then held back for good was silent.
        var delivery = new TestDelivery { FailSettling = true };
        using var log = new LogCollector();

        var settled = await DeliverySettlement.RunAsync((d, ct) => d.NackAsync(TimeSpan.FromSeconds(5), ct), delivery, log.CreateLogger("t"), CancellationToken.None);

        Assert.True(settled);
        Assert.Equal(["nack 00:00:05"], delivery.Calls);
        var entry = Assert.Single(log.Entries);
        Assert.Equal(1042, entry.EventId);
        Assert.Equal("settling failed", entry.Exception?.Message);
    }

    private sealed class TestDelivery(Exception? decodeFailure = null)
        : Delivery(new Envelope { MessageId = Guid.CreateVersion7(), MessageType = "t", Time = DateTimeOffset.UnixEpoch }, "q", decodeFailure)
    {
        private readonly List<string> _calls = [];

        public bool FailSettling { get; init; }

        public IReadOnlyList<string> Calls => _calls;

        protected override ValueTask OnAckAsync(CancellationToken cancellationToken) => Record("ack");

        protected override ValueTask OnNackAsync(TimeSpan delay, CancellationToken cancellationToken) => Record($"nack {delay}");

        protected override ValueTask OnDeadLetterAsync(string reason, CancellationToken cancellationToken) => Record($"dead-letter {reason}");

        private ValueTask Record(string call)
        {
            _calls.Add(call);
            return FailSettling ? throw new InvalidOperationException("settling failed") : ValueTask.CompletedTask;
        }
    }
}
