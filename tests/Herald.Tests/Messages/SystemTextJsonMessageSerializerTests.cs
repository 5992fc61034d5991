using System.Text;
using Herald.Messages;

namespace Herald.Tests.Messages;

/// <summary>
/// Bodies from other producers: UTF-8 with a byte-order mark is what .NET's <c>Encoding.UTF8</c> preamble, PowerShell and
/// many Windows tools write, and what System.Text.Json's stream reads and ASP.NET Core's request bodies accept. It was
/// dead-lettered as undecodable ("'0xEF' is an invalid start of a value").
/// </summary>
public sealed class SystemTextJsonMessageSerializerTests
{
    private static readonly SystemTextJsonMessageSerializer Serializer = new();

    [Fact]
    public void ABodyStartingWithAUtf8ByteOrderMark_IsRead()
    {
        byte[] body = [.. Encoding.UTF8.GetPreamble(), .. """{"sku":"cable","quantity":2}"""u8];

        var read = Assert.IsType<Line>(Serializer.Deserialize(body, typeof(Line)));

        Assert.Equal(new Line("cable", 2), read);
    }

    [Fact]
    public void ABodyThatIsOnlyAByteOrderMark_OrHasTwo_IsUndecodable()
    {
        var preamble = Encoding.UTF8.GetPreamble();

        Assert.Throws<MessageDeserializationException>(() => Serializer.Deserialize(preamble, typeof(Line)));
        Assert.Throws<MessageDeserializationException>(() => Serializer.Deserialize((byte[])[.. preamble, .. preamble, .. "{}"u8], typeof(Line)));
    }

    private sealed record Line(string Sku, int Quantity);
}
