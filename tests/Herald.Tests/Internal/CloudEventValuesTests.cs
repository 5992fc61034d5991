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
    [InlineData("0001-01-01T00:00:00.000Z")]
    [InlineData("2024-02-29T23:59:59.999Z")]
    [InlineData("9999-12-31T23:59:59.999Z")]
    public void FormatTimeUtf8_WritesTheBytesOfFormatTime_AndTryParseExactTime_ReadsThemBack(string text)
    {
        Assert.True(CloudEventValues.TryParseTime(text, out var time));
        var bytes = CloudEventValues.FormatTimeUtf8(time);
        Assert.Equal(text, System.Text.Encoding.UTF8.GetString(bytes));
        Assert.Equal(CloudEventValues.FormatTime(time), System.Text.Encoding.UTF8.GetString(bytes));
        Assert.True(CloudEventValues.TryParseExactTime(bytes, out var read));
        Assert.Equal(time, read);
    }

    [Theory]
    [InlineData("2031-05-17T11:45:12Z")]
    [InlineData("2031-05-17T13:45:12.345+02:00")]
    [InlineData("2031-02-31T11:45:12.345Z")]
    [InlineData("2031-05-17T11:45:1x.345Z")]
    public void TryParseExactTime_LeavesEveryOtherFormToTryParseTime(string text) =>
        Assert.False(CloudEventValues.TryParseExactTime(System.Text.Encoding.UTF8.GetBytes(text), out _));

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

        // Pinned: ids derived by earlier versions must not change, or the inbox would take old copies as new messages.
        Assert.Equal(Guid.Parse("0220adf6-7b8f-8dc0-a68c-552a7e9072f0"), hashed);
        Assert.Equal(hashed, CloudEventValues.DerivedMessageId("payment-123"u8));
    }

    [Fact]
    public void DerivedMessageId_OfParts_IsStable_AndTellsApartPartsThatConcatenateAlike()
    {
        var id = CloudEventValues.DerivedMessageId("ab"u8.ToArray(), "c"u8.ToArray());
        Assert.Equal(8, id.Version);
        Assert.Equal(id, CloudEventValues.DerivedMessageId("ab"u8.ToArray(), "c"u8.ToArray()));
        Assert.NotEqual(id, CloudEventValues.DerivedMessageId("a"u8.ToArray(), "bc"u8.ToArray()));
        Assert.NotEqual(id, CloudEventValues.DerivedMessageId("abc"u8));
        Assert.NotEqual(CloudEventValues.DerivedMessageId(ReadOnlyMemory<byte>.Empty, "x"u8.ToArray()), CloudEventValues.DerivedMessageId("x"u8.ToArray(), ReadOnlyMemory<byte>.Empty));
    }

    [Fact]
    public void DecodeFailure_KeepsAMalformedMessageException_AndNamesAnyOtherWithItAsTheCause()
    {
        var malformed = new Herald.Transport.MalformedMessageException("Malformed message: no type.");
        Assert.Same(malformed, CloudEventValues.DecodeFailure(malformed));

        var broken = new FormatException("bad base64");
        var failure = CloudEventValues.DecodeFailure(broken);
        Assert.Equal("Malformed message: decoding it failed (FormatException: bad base64)", failure.Message);
        Assert.Same(broken, failure.InnerException);
    }

    [Fact]
    public void Excerpt_QuotesAWireValueUpTo64Characters()
    {
        var exact = new string('a', 64);
        Assert.Equal(exact, CloudEventValues.Excerpt(exact));
        Assert.Equal(exact + "...", CloudEventValues.Excerpt(exact + "b"));
        Assert.Equal("", CloudEventValues.Excerpt(""));
    }

    [Fact]
    public void EnvelopeAttributes_AreTheCloudEventsAttributesTheEnvelopeReadsItself()
    {
        Assert.Equal(
            ["id", "type", "source", "specversion", "time", "dataschema", "datacontenttype", "partitionkey", "correlationid", "causationid", "userid", "deliveryattempt"],
            CloudEventValues.EnvelopeAttributes);
    }
}
