using System.Text;
using Herald.Messages;
using Xunit;

namespace Herald.Conformance.Reliability;

/// <summary>Envelopes with every attribute set, and a field-by-field comparison, for the store conformance suites.</summary>
public static class TestEnvelopes
{
    /// <summary>An envelope with every attribute set, headers with non-ASCII text and a body with bytes that are not valid UTF-8.</summary>
    public static Envelope Create(string messageType = "conformance-message", DateTimeOffset? time = null, string? partitionKey = "key-1")
    {
        var at = time ?? new DateTimeOffset(2030, 1, 2, 3, 4, 5, 678, TimeSpan.Zero);
        var id = Guid.CreateVersion7(at);
        return new Envelope
        {
            MessageId = id,
            MessageType = messageType,
            SchemaVersion = 3,
            Time = at,
            CorrelationId = "corr-" + id.ToString("N")[..8],
            CausationId = "cause-1",
            UserId = "ann",
            PartitionKey = partitionKey,
            ContentType = "application/json",
            Headers = new Dictionary<string, string>(StringComparer.Ordinal)
            {
                ["traceparent"] = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                ["x-note"] = "grüße, 東京",
            },
            Body = Encoding.UTF8.GetBytes("{\"text\":\"hé\"}").Concat(new byte[] { 0x00, 0xFF, 0xFE }).ToArray(),
            DeliveryAttempt = 4,
        };
    }

    /// <summary>A time at UTC+2, 567.8 microseconds past its millisecond: what no engine keeps as given.</summary>
    public static readonly DateTimeOffset OffsetTimeWithTicks = new DateTimeOffset(2026, 3, 4, 7, 6, 7, 890, TimeSpan.FromHours(2)).AddTicks(5_678);

    /// <summary>Asserts that <paramref name="actual"/> is <see cref="OffsetTimeWithTicks"/> as PostgreSQL's timestamptz keeps it: in UTC, cut to the microsecond.</summary>
    public static void AssertKeptInUtcToTheMicrosecond(DateTimeOffset actual)
    {
        Assert.Equal(TimeSpan.Zero, actual.Offset);
        Assert.Equal(new DateTimeOffset(2026, 3, 4, 5, 6, 7, 890, TimeSpan.Zero).AddTicks(5_670).UtcTicks, actual.UtcTicks);
    }

    /// <summary>
    /// Asserts that <paramref name="actual"/> is <paramref name="given"/> (a clock's time, say) as PostgreSQL's timestamptz
    /// keeps it: in UTC, cut to the microsecond.
    /// </summary>
    public static void AssertKeptInUtcToTheMicrosecond(DateTimeOffset given, DateTimeOffset actual) =>
        Assert.Equal((given.UtcTicks - (given.UtcTicks % TimeSpan.TicksPerMicrosecond), TimeSpan.Zero), (actual.UtcTicks, actual.Offset));

    /// <summary>Asserts that two envelopes agree on every attribute, headers and body bytes included.</summary>
    public static void AssertEqual(Envelope expected, Envelope actual)
    {
        ArgumentNullException.ThrowIfNull(expected);
        ArgumentNullException.ThrowIfNull(actual);
        Assert.Equal(expected.MessageId, actual.MessageId);
        Assert.Equal(expected.MessageType, actual.MessageType);
        Assert.Equal(expected.SchemaVersion, actual.SchemaVersion);
        Assert.Equal(expected.Time, actual.Time);
        Assert.Equal(expected.CorrelationId, actual.CorrelationId);
        Assert.Equal(expected.CausationId, actual.CausationId);
        Assert.Equal(expected.UserId, actual.UserId);
        Assert.Equal(expected.PartitionKey, actual.PartitionKey);
        Assert.Equal(expected.ContentType, actual.ContentType);
        Assert.Equal(expected.Headers.OrderBy(h => h.Key, StringComparer.Ordinal), actual.Headers.OrderBy(h => h.Key, StringComparer.Ordinal));
        Assert.Equal(expected.Body.ToArray(), actual.Body.ToArray());
        Assert.Equal(expected.DeliveryAttempt, actual.DeliveryAttempt);
    }
}
