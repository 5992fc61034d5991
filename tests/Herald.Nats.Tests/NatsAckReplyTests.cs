using Herald.Nats.Transport;

namespace Herald.Nats.Tests;

/// <summary>Reading a JetStream message's metadata from its ack subject, as NATS.Net does but without its allocations (issue 13).</summary>
public sealed class NatsAckReplyTests
{
    [Theory]
    [InlineData("$JS.ACK.ORDERS.billing.3.1042.977.1733312345678901234.17")]
    [InlineData("$JS.ACK._.ACCHASH.ORDERS.billing.3.1042.977.1733312345678901234.17")]
    [InlineData("$JS.ACK.hub.ACCHASH.ORDERS.billing.3.1042.977.1733312345678901234.17.r4nd0m")]
    public void BothFormsOfTheAckSubject_AreRead(string reply)
    {
        Assert.True(NatsAckReply.TryParse(reply, out var parsed));
        Assert.Equal(3UL, parsed.Delivered);
        Assert.Equal(1042UL, parsed.StreamSequence);
        Assert.Equal(17UL, parsed.Pending);
        Assert.Equal(DateTimeOffset.FromUnixTimeMilliseconds(1733312345678), parsed.Timestamp);
    }

    [Theory]
    [InlineData(null)]
    [InlineData("_INBOX.abc")]
    [InlineData("$JS.ACK.ORDERS.billing.3.1042")]
    [InlineData("$JS.ACK.ORDERS.billing.three.1042.977.1733312345678901234.17")]
    [InlineData("$JS.ACK.ORDERS.billing.3.1042.977.1733312345678901234.-1")]
    [InlineData("$JS.ACK.a.b.c.ORDERS.billing.3.1042.977.1733312345678901234.17.x.y")]
    public void AnythingElse_IsNotRead(string? reply) => Assert.False(NatsAckReply.TryParse(reply, out _));
}
