using Herald.Internal;

namespace Herald.Tests.Internal;

/// <summary>What the adapters keep of a message that failed to decode (issue 9, one dead-letter path).</summary>
public sealed class SalvageTests
{
    [Fact]
    public void Read_ReturnsWhatThePartReads_OrTheFallbackWhenItThrows()
    {
        Assert.Equal("order-1", Salvage.Read(() => "order-1", "none"));
        Assert.Equal("none", Salvage.Read<string>(() => throw new FormatException("bad"), "none"));
        Assert.Null(Salvage.Read<string?>(() => throw new InvalidCastException(), null));
    }

    [Fact]
    public void Envelope_KeepsTheIntactParts_AndGivesEveryBrokenOneItsFallback()
    {
        var id = Guid.CreateVersion7();
        var now = new DateTimeOffset(2031, 5, 17, 11, 45, 12, TimeSpan.Zero);

        var envelope = Salvage.Envelope(
            3,
            now,
            () => id,
            () => throw new InvalidCastException("type column"),
            () => throw new FormatException("time column"),
            () => "customer-7",
            () => null!);

        Assert.Equal(id, envelope.MessageId);
        Assert.Equal("", envelope.MessageType);
        Assert.Equal(now, envelope.Time);
        Assert.Equal("customer-7", envelope.PartitionKey);
        Assert.Empty(envelope.Body.ToArray());
        Assert.Equal(3, envelope.DeliveryAttempt);
    }
}
