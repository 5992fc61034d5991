using System.Globalization;
using System.Text;
using Herald.RabbitMQ.Transport;

namespace Herald.RabbitMQ.Tests;

/// <summary>
/// The <c>cloudEvents:time</c> header is written and read digit by digit on the hot path (issue 9): it must be exactly
/// what the format string wrote before, and anything else must fall through to the general parser.
/// </summary>
public sealed class EnvelopeTimeTests
{
    private const string Format = "yyyy-MM-dd'T'HH:mm:ss.fff'Z'";

    public static TheoryData<string> Times =>
    [
        "0001-01-01T00:00:00.0000000Z",
        "2024-02-29T23:59:59.9994567Z",
        "2026-12-03T19:07:47.0010000Z",
        "9999-12-31T23:59:59.9999999Z",
    ];

    [Theory]
    [MemberData(nameof(Times))]
    public void FormatTime_WritesWhatTheFormatStringWrote_AndReadsBackToTheMillisecond(string text)
    {
        var time = DateTimeOffset.Parse(text, CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal | DateTimeStyles.AdjustToUniversal);

        var written = AmqpEnvelopeCodec.FormatTime(time);

        Assert.Equal(time.UtcDateTime.ToString(Format, CultureInfo.InvariantCulture), Encoding.UTF8.GetString(written));
        Assert.True(AmqpEnvelopeCodec.TryParseTime(written, out var read));
        Assert.Equal(new DateTimeOffset(time.UtcDateTime.Ticks - (time.UtcDateTime.Ticks % TimeSpan.TicksPerMillisecond), TimeSpan.Zero), read);
    }

    [Fact]
    public void FormatTime_InTheSameMillisecond_SharesOneText_AndANewMillisecondWritesItsOwn()
    {
        var time = new DateTimeOffset(2026, 12, 7, 23, 40, 1, 234, TimeSpan.Zero);

        // The text is kept for the whole process: a test running beside this one may write another time between two
        // calls here, so sharing is asserted on a pair that nothing came between (it takes a few tries at most).
        byte[] first, sameMillisecond;
        var attempts = 0;
        do
        {
            first = AmqpEnvelopeCodec.FormatTime(time.AddTicks(1234));
            sameMillisecond = AmqpEnvelopeCodec.FormatTime(time.AddTicks(9999).ToOffset(TimeSpan.FromHours(2)));
        }
        while (!ReferenceEquals(first, sameMillisecond) && ++attempts < 1000);

        var next = AmqpEnvelopeCodec.FormatTime(time.AddMilliseconds(1));
        var back = AmqpEnvelopeCodec.FormatTime(time);

        Assert.Same(first, sameMillisecond);
        Assert.Equal("2026-12-07T23:40:01.234Z", Encoding.UTF8.GetString(first));
        Assert.Equal("2026-12-07T23:40:01.235Z", Encoding.UTF8.GetString(next));
        Assert.Equal("2026-12-07T23:40:01.234Z", Encoding.UTF8.GetString(back));
    }

    [Theory]
    [InlineData("2024-02-30T00:00:00.000Z")]
    [InlineData("2024-13-01T00:00:00.000Z")]
    [InlineData("2024-01-01T24:00:00.000Z")]
    [InlineData("2024-01-01T00:00:60.000Z")]
    [InlineData("0000-01-01T00:00:00.000Z")]
    [InlineData("2024-01-01T00:00:00.000+01:00")]
    [InlineData("2024-01-01T00:00:00Z")]
    [InlineData("2024-01-01 00:00:00.000Z")]
    [InlineData("2024-0a-01T00:00:00.000Z")]
    public void TryParseTime_AnythingButTheExactForm_IsLeftToTheGeneralParser(string text) =>
        Assert.False(AmqpEnvelopeCodec.TryParseTime(Encoding.UTF8.GetBytes(text), out _));
}
