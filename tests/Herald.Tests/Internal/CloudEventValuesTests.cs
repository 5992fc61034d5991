using Herald.Internal;
using Microsoft.Extensions.Time.Testing;

namespace Herald.Tests.Internal;

public sealed class CloudEventValuesTests
{
    [Fact]
    public void FormatTime_WritesUtcWithMilliseconds_AndTryParseTime_ReadsItBack()
    {
        var time = new DateTimeOffset(2031, 5, 17, 13, 45, 12, 345, TimeSpan.FromHours(2));
        var text = CloudEventValues.FormatTime(time);
        Assert.Equal("2031-05-17T11:45:12.345Z", text);
        Assert.True(CloudEventValues.TryParseTime(text, out var parsed));
        Assert.Equal(time, parsed);
        Assert.Equal(TimeSpan.Zero, parsed.Offset);
    }

    [Theory]
    [InlineData("2031-05-17T13:45:12.345+02:00", "2031-05-17T11:45:12.345Z")]
    [InlineData("2031-05-17T11:45:12Z", "2031-05-17T11:45:12.000Z")]
    public void TryParseTime_ReadsOtherRfc3339Forms(string text, string expected)
    {
        Assert.True(CloudEventValues.TryParseTime(text, out var parsed));
        Assert.Equal(expected, CloudEventValues.FormatTime(parsed));
    }

    [Theory]
    [InlineData("2031-02-31T25:61:61.000Z")]
    [InlineData("the day before yesterday")]
    [InlineData("")]
    public void TryParseTime_RefusesWhatIsNoTime(string text) => Assert.False(CloudEventValues.TryParseTime(text, out _));

    [Theory]
    [InlineData("urn:herald:schema:order-placed:3", 3)]
    [InlineData("urn:herald:schema:order-placed:0", 1)]
    [InlineData("urn:herald:schema:x:-7", 1)]
    [InlineData("https://example.com/schema", 1)]
    public void SchemaVersion_ReadsWhatDataSchemaWrites_AndOneOtherwise(string dataSchema, int expected)
    {
        Assert.Equal(expected, CloudEventValues.SchemaVersion(dataSchema));
        Assert.Equal("urn:herald:schema:order-placed:3", CloudEventValues.DataSchema("order-placed", 3));
    }

    [Fact]
    public void ForeignMessageId_KeepsAGuid_HashesAnyOtherIdStably_AndMakesANewOneForNone()
    {
        var clock = new FakeTimeProvider(DateTimeOffset.UnixEpoch.AddYears(60));
        var guid = Guid.NewGuid();
        Assert.Equal(guid, CloudEventValues.ForeignMessageId(guid.ToString(), clock));
        var hashed = CloudEventValues.ForeignMessageId("payment-123", clock);
        Assert.Equal(8, hashed.Version);
        Assert.Equal(hashed, CloudEventValues.ForeignMessageId("payment-123", clock));
        Assert.Equal(7, CloudEventValues.ForeignMessageId(null, clock).Version);
    }
}
