using System.Text;
using Confluent.Kafka;
using Herald.Kafka.Transport;

namespace Herald.Kafka.Tests;

/// <summary>
/// Issue 14: the consumer decodes repeated attribute values (type, source, content type) through a small table instead of
/// making a string per record, and parses ids and times from their bytes. What it decodes must not change.
/// </summary>
public sealed class RepeatedTextsTests
{
    [Fact]
    public void Get_TheSameBytes_GivesTheSameString_AndPastItsSize_StillTheRightOne_Issue14()
    {
        var texts = new RepeatedTexts();
        var first = texts.Get("order-created"u8.ToArray());
        Assert.Same(first, texts.Get("order-created"u8.ToArray()));

        // More distinct values than the table holds: each still reads as its own text.
        for (var i = 0; i < 100; i++)
        {
            var value = $"type-{i % 40}-é";
            Assert.Equal(value, texts.Get(Encoding.UTF8.GetBytes(value)));
        }

        Assert.Equal("order-created", texts.Get("order-created"u8.ToArray()));
    }

    [Theory]
    [InlineData("0195f3c2-7a1b-7cde-8f00-0123456789ab")]
    [InlineData("{0195f3c2-7a1b-7cde-8f00-0123456789ab}")]
    [InlineData("0195f3c27a1b7cde8f000123456789ab")]
    [InlineData(" 0195f3c2-7a1b-7cde-8f00-0123456789ab ")]
    [InlineData("not-a-guid")]
    [InlineData("")]
    public void Decode_WithTheTable_ReadsEveryRecordAsWithout_Issue14(string id)
    {
        var texts = new RepeatedTexts();
        for (var i = 0; i < 3; i++)
        {
            var record = Record(id, i);
            var plain = KafkaEnvelopeCodec.Decode(record, "/herald", TimeProvider.System, out var plainFailure);
            var shared = KafkaEnvelopeCodec.Decode(record, "/herald", TimeProvider.System, out var sharedFailure, texts);

            Assert.Equal(plainFailure?.Message, sharedFailure?.Message);
            Assert.Equal(Guid.TryParse(id, out var expected) ? expected : Guid.Empty, shared.MessageId);
            Assert.Equal(plain with { Headers = shared.Headers }, shared);
            Assert.Equal(plain.Headers.OrderBy(h => h.Key), shared.Headers.OrderBy(h => h.Key));
        }
    }

    private static Message<byte[]?, byte[]> Record(string id, int i) => new()
    {
        Value = "{}"u8.ToArray(),
        Headers = new Headers
        {
            { "ce_specversion", "1.0"u8.ToArray() },
            { "ce_id", Encoding.UTF8.GetBytes(id) },
            { "ce_type", Encoding.UTF8.GetBytes(i % 2 == 0 ? "order-created" : "order-paid") },
            { "ce_source", Encoding.UTF8.GetBytes(i == 2 ? "/elsewhere" : "/herald") },
            { "ce_time", "2026-12-04T13:20:28.123Z"u8.ToArray() },
            { "content-type", "application/json"u8.ToArray() },
            { "ce_tenant", Encoding.UTF8.GetBytes($"t{i}") },
            { KafkaEnvelopeCodec.AttemptHeader, Encoding.UTF8.GetBytes($"{i + 1}") },
        },
    };
}
