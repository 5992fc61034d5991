using System.Text;
using Herald.Messages;

namespace Herald.Tests.Messages;

/// <summary>
/// The envelope keeps its rarer attributes (user, partition key, a content type other than JSON, a time offset) out of line
/// to save memory per message (issue 9): every attribute must still read back as set, through copies, and compare by value.
/// </summary>
public sealed class EnvelopeTests
{
    private static readonly DateTimeOffset Berlin = new(2031, 5, 6, 7, 8, 9, 123, TimeSpan.FromHours(2));

    [Fact]
    public void EveryAttribute_ReadsBackAsSet_IncludingATimeOffsetOtherThanUtc()
    {
        var envelope = Full();

        Assert.Equal(Berlin, envelope.Time);
        Assert.Equal(TimeSpan.FromHours(2), envelope.Time.Offset);
        Assert.Equal(Berlin.DateTime, envelope.Time.DateTime);
        Assert.Equal("ada", envelope.UserId);
        Assert.Equal("order-7", envelope.PartitionKey);
        Assert.Equal("application/avro", envelope.ContentType);
        Assert.Equal("corr", envelope.CorrelationId);
        Assert.Equal("cause", envelope.CausationId);
    }

    [Fact]
    public void ANewEnvelope_ReadsTheDefaults_UtcTimeAndJson()
    {
        var now = new DateTimeOffset(2031, 5, 6, 7, 8, 9, TimeSpan.Zero);
        var envelope = new Envelope { MessageId = Guid.CreateVersion7(), MessageType = "t", Time = now };

        Assert.Equal(now, envelope.Time);
        Assert.Equal(TimeSpan.Zero, envelope.Time.Offset);
        Assert.Equal(ContentTypes.Json, envelope.ContentType);
        Assert.Null(envelope.UserId);
        Assert.Null(envelope.PartitionKey);
    }

    [Fact]
    public void ACopyWithOneAttributeChanged_KeepsTheOthers_AndLeavesTheOriginalAsItWas()
    {
        var original = Full();

        var copy = original with { UserId = null, Time = Berlin.ToOffset(TimeSpan.FromHours(-5)) };

        Assert.Null(copy.UserId);
        Assert.Equal("order-7", copy.PartitionKey);
        Assert.Equal("application/avro", copy.ContentType);
        Assert.Equal(TimeSpan.FromHours(-5), copy.Time.Offset);
        Assert.Equal("ada", original.UserId);
        Assert.Equal(TimeSpan.FromHours(2), original.Time.Offset);
        Assert.NotEqual(original, copy);
        Assert.Equal(original, copy with { UserId = "ada", Time = Berlin });
    }

    [Fact]
    public void ContentType_SetToJsonOrNull_ReadsBackSo()
    {
        var envelope = Full();

        // An adapter's salvage of a broken message may carry no content type: it must not read as JSON.
        Assert.Null((envelope with { ContentType = null! }).ContentType);
        Assert.Equal(ContentTypes.Json, (envelope with { ContentType = new string(ContentTypes.Json.AsSpan()) }).ContentType);
        Assert.Equal("text/plain", (envelope with { ContentType = null! } with { ContentType = "text/plain" }).ContentType);
    }

    [Fact]
    public void Equality_IsByValue_HoweverTheRareAttributesWereSet()
    {
        var a = Full();
        var b = new Envelope
        {
            MessageId = a.MessageId,
            MessageType = a.MessageType,
            Time = Berlin,
            CorrelationId = "corr",
            CausationId = "cause",
            ContentType = "application/avro",
            PartitionKey = new string("order-7".AsSpan()),
            UserId = new string("ada".AsSpan()),
            Body = a.Body,
            DeliveryAttempt = 1,
        };

        Assert.Equal(a, b);
        Assert.Equal(a.GetHashCode(), b.GetHashCode());
    }

    private static Envelope Full() => new()
    {
        MessageId = Guid.Parse("01890a5d-ac96-774b-bcce-b302099a8057"),
        MessageType = "order-placed",
        Time = Berlin,
        UserId = "ada",
        PartitionKey = "order-7",
        ContentType = "application/avro",
        CorrelationId = "corr",
        CausationId = "cause",
        Body = Encoding.UTF8.GetBytes("{}"),
        DeliveryAttempt = 1,
    };
}
