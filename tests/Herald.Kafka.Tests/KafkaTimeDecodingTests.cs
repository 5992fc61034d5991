using System.Globalization;
using System.Text;
using Confluent.Kafka;
using CsCheck;
using Herald.Kafka.Transport;

namespace Herald.Kafka.Tests;

/// <summary>
/// Issue 14: the consumer reads <c>ce_time</c> in Herald's own form by hand rather than through the general date parser.
/// Whatever the text of that shape holds (impossible months, days, hours; leap days), the record decodes to the same time,
/// or is refused as malformed, exactly as the general parser decided before. Other forms still go to the general parser.
/// </summary>
public sealed class KafkaTimeDecodingTests
{
    private const string TimeFormat = "yyyy-MM-dd'T'HH:mm:ss.fff'Z'";

    [Fact]
    public void TimesInHeraldsOwnForm_DecodeAsTheGeneralParserReadsThem_Issue14()
    {
        var gen =
            from year in Gen.OneOf(Gen.Int[0, 9999], Gen.Const(2024), Gen.Const(2100), Gen.Const(2000))
            from month in Gen.Int[0, 13]
            from day in Gen.Int[0, 32]
            from hour in Gen.Int[0, 25]
            from minute in Gen.Int[0, 61]
            from second in Gen.Int[0, 61]
            from millisecond in Gen.Int[0, 999]
            select string.Create(CultureInfo.InvariantCulture, $"{year:D4}-{month:D2}-{day:D2}T{hour:D2}:{minute:D2}:{second:D2}.{millisecond:D3}Z");

        gen.Sample(text => Assert.Equal(Expected(text), Decoded(text)), iter: 20_000);
    }

    [Theory]
    [InlineData("2024-02-29T23:59:59.999Z")]
    [InlineData("2023-02-29T00:00:00.000Z")]
    [InlineData("0001-01-01T00:00:00.000Z")]
    [InlineData("9999-12-31T23:59:59.999Z")]
    [InlineData("2026-12-04T13:20:28.1Z")]
    [InlineData("2026-12-04T13:20:28+02:00")]
    [InlineData("2026-12-04T13:20:28.123z")]
    [InlineData("2026-12-04 13:20:28.123Z")]
    [InlineData("２０２６-12-04T13:20:28.123Z")]
    public void TimesAtTheEdgesAndInOtherForms_DecodeAsTheGeneralParserReadsThem_Issue14(string text) =>
        Assert.Equal(Expected(text), Decoded(text));

    /// <summary>What the codec decided before it read its own form by hand: the exact format, then any RFC 3339 form.</summary>
    private static DateTimeOffset? Expected(string text)
    {
        const DateTimeStyles styles = DateTimeStyles.AssumeUniversal | DateTimeStyles.AdjustToUniversal;
        return DateTimeOffset.TryParseExact(text, TimeFormat, CultureInfo.InvariantCulture, styles, out var time)
            || DateTimeOffset.TryParse(text, CultureInfo.InvariantCulture, styles, out time)
            ? time
            : null;
    }

    private static DateTimeOffset? Decoded(string text)
    {
        var record = new Message<byte[]?, byte[]>
        {
            Value = "{}"u8.ToArray(),
            Headers = new Headers
            {
                { "ce_specversion", "1.0"u8.ToArray() },
                { "ce_id", Encoding.UTF8.GetBytes(Guid.CreateVersion7().ToString()) },
                { "ce_type", "order-created"u8.ToArray() },
                { "ce_time", Encoding.UTF8.GetBytes(text) },
            },
        };
        var envelope = KafkaEnvelopeCodec.Decode(record, "/herald", TimeProvider.System, out var failure);
        return failure is null ? envelope.Time : null;
    }
}
