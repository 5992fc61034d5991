using System.Globalization;
using System.Security.Cryptography;
using System.Text;

namespace Herald.Internal;

/// <summary>
/// The text forms of the CloudEvents attributes every transport writes and reads the same way (docs/cloudevents.md):
/// <c>time</c>, <c>dataschema</c>, and the id Herald gives a foreign message whose id is not a Guid.
/// </summary>
/// <remarks>An extension point for Herald's adapter packages, not for application code; it may change in any release.</remarks>
public static class CloudEventValues
{
    /// <summary>The start of the <c>dataschema</c> Herald writes: <c>urn:herald:schema:{type}:{version}</c>.</summary>
    public const string SchemaPrefix = "urn:herald:schema:";

    private const string TimeFormat = "yyyy-MM-dd'T'HH:mm:ss.fff'Z'";

    /// <summary>The time as RFC 3339 in UTC with milliseconds, as every transport writes <c>time</c>.</summary>
    public static string FormatTime(DateTimeOffset time) => time.UtcDateTime.ToString(TimeFormat, CultureInfo.InvariantCulture);

    /// <summary>Reads an RFC 3339 time (Herald's own form first, then any the runtime parses); false when it is none.</summary>
    public static bool TryParseTime(ReadOnlySpan<char> text, out DateTimeOffset time) =>
        DateTimeOffset.TryParseExact(text, TimeFormat, CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal | DateTimeStyles.AdjustToUniversal, out time)
        || DateTimeOffset.TryParse(text, CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal | DateTimeStyles.AdjustToUniversal, out time);

    /// <summary>The <c>dataschema</c> of a message type's schema version.</summary>
    public static string DataSchema(string messageType, int version) =>
        string.Create(CultureInfo.InvariantCulture, $"{SchemaPrefix}{messageType}:{version}");

    /// <summary>The schema version a <c>dataschema</c> names; 1 when it is not one Herald wrote.</summary>
    public static int SchemaVersion(ReadOnlySpan<char> dataSchema)
    {
        if (dataSchema.StartsWith(SchemaPrefix, StringComparison.Ordinal)
            && dataSchema.LastIndexOf(':') is var colon and > 0
            && int.TryParse(dataSchema[(colon + 1)..], NumberStyles.None, CultureInfo.InvariantCulture, out var version)
            && version >= 1)
        {
            return version;
        }

        return 1;
    }

    /// <summary>
    /// The id of a message from another client: its own id when that is a Guid, a stable Guid derived from it otherwise (so
    /// redeliveries and duplicates keep one id; RFC 9562 version 8), and a new id when it has none.
    /// </summary>
    public static Guid ForeignMessageId(string? messageId, TimeProvider timeProvider)
    {
        ArgumentNullException.ThrowIfNull(timeProvider);
        if (messageId is null)
        {
            return Guid.CreateVersion7(timeProvider.GetUtcNow());
        }

        if (Guid.TryParse(messageId, out var id))
        {
            return id;
        }

        Span<byte> hash = stackalloc byte[32];
        SHA256.HashData(Encoding.UTF8.GetBytes(messageId), hash);
        var bytes = hash[..16];
        bytes[6] = (byte)((bytes[6] & 0x0F) | 0x80);
        bytes[8] = (byte)((bytes[8] & 0x3F) | 0x80);
        return new Guid(bytes, bigEndian: true);
    }
}
