using System.Globalization;
using System.Numerics;
using System.Security.Cryptography;
using System.Text;
using Herald.Transport;

namespace Herald.Internal;

/// <summary>
/// The text forms of the CloudEvents attributes every transport writes and reads the same way (docs/cloudevents.md):
/// <c>time</c>, <c>dataschema</c>, and the id Herald gives a foreign message whose id is not a Guid or that has none;
/// which attributes are the envelope's own, and how a decode failure reads.
/// </summary>
/// <remarks>An extension point for Herald's adapter packages, not for application code; it may change in any release.</remarks>
public static class CloudEventValues
{
    /// <summary>The start of the <c>dataschema</c> Herald writes: <c>urn:herald:schema:{type}:{version}</c>.</summary>
    public const string SchemaPrefix = "urn:herald:schema:";

    /// <summary>
    /// The attributes Herald reads into the envelope's own fields or sets itself (<c>deliveryattempt</c>); every other attribute
    /// is an extension, carried as an envelope header.
    /// </summary>
    public static IReadOnlyList<string> EnvelopeAttributes { get; } =
        ["id", "type", "source", "specversion", "time", "dataschema", "datacontenttype", "partitionkey", "correlationid", "causationid", "userid", "deliveryattempt"];

    private const string TimeFormat = "yyyy-MM-dd'T'HH:mm:ss.fff'Z'";
    private const int TimeLength = 24;

    /// <summary>
    /// The time as RFC 3339 in UTC with milliseconds (<c>2031-05-17T11:45:12.345Z</c>), as every transport writes <c>time</c>;
    /// written digit by digit, since a custom format string is parsed again on every call and this runs for every message.
    /// </summary>
    public static string FormatTime(DateTimeOffset time) => string.Create(TimeLength, time.UtcDateTime, static (text, utc) => WriteTime(text, utc));

    /// <summary>As <see cref="FormatTime"/>, in UTF-8 (for the transports whose headers are bytes).</summary>
    public static byte[] FormatTimeUtf8(DateTimeOffset time)
    {
        var text = new byte[TimeLength];
        WriteTime<byte>(text, time.UtcDateTime);
        return text;
    }

    /// <summary>
    /// Reads an RFC 3339 time: the exact form <see cref="FormatTime"/> writes straight from its digits, any other through the
    /// runtime's parsers; false when it is none (an impossible date included).
    /// </summary>
    public static bool TryParseTime(ReadOnlySpan<char> text, out DateTimeOffset time) =>
        TryParseOwnTime(text, out time)
        || DateTimeOffset.TryParseExact(text, TimeFormat, CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal | DateTimeStyles.AdjustToUniversal, out time)
        || DateTimeOffset.TryParse(text, CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal | DateTimeStyles.AdjustToUniversal, out time);

    /// <summary>
    /// Reads a time in UTF-8 in exactly the form <see cref="FormatTimeUtf8"/> writes, from its digits (no text made for it);
    /// false for any other form (an impossible date included), which the caller then gives to <see cref="TryParseTime"/>.
    /// </summary>
    public static bool TryParseExactTime(ReadOnlySpan<byte> text, out DateTimeOffset time) => TryParseOwnTime(text, out time);

    // One reader and one writer of Herald's own form for both UTF-16 and UTF-8.
    private static bool TryParseOwnTime<T>(ReadOnlySpan<T> text, out DateTimeOffset time)
        where T : unmanaged, IBinaryInteger<T>
    {
        if (text.Length == TimeLength && At(text, 4) == '-' && At(text, 7) == '-' && At(text, 10) == 'T' && At(text, 13) == ':' && At(text, 16) == ':'
            && At(text, 19) == '.' && At(text, 23) == 'Z'
            && Number(text, 0, 4, out var year) && Number(text, 5, 2, out var month) && Number(text, 8, 2, out var day)
            && Number(text, 11, 2, out var hour) && Number(text, 14, 2, out var minute) && Number(text, 17, 2, out var second)
            && Number(text, 20, 3, out var millisecond)
            && year >= 1 && month is >= 1 and <= 12 && day >= 1 && day <= DateTime.DaysInMonth(year, month) && hour <= 23 && minute <= 59 && second <= 59)
        {
            time = new DateTimeOffset(year, month, day, hour, minute, second, millisecond, TimeSpan.Zero);
            return true;
        }

        time = default;
        return false;

        static bool Number(ReadOnlySpan<T> text, int at, int count, out int value)
        {
            value = 0;
            for (var i = at; i < at + count; i++)
            {
                var digit = At(text, i) - '0';
                if ((uint)digit > 9)
                {
                    return false;
                }

                value = (value * 10) + digit;
            }

            return true;
        }

        static int At(ReadOnlySpan<T> text, int index) => int.CreateTruncating(text[index]);
    }

    private static void WriteTime<T>(Span<T> text, DateTime utc)
        where T : unmanaged, IBinaryInteger<T>
    {
        Digits(text, 0, utc.Year, 4, '-');
        Digits(text, 5, utc.Month, 2, '-');
        Digits(text, 8, utc.Day, 2, 'T');
        Digits(text, 11, utc.Hour, 2, ':');
        Digits(text, 14, utc.Minute, 2, ':');
        Digits(text, 17, utc.Second, 2, '.');
        Digits(text, 20, utc.Millisecond, 3, 'Z');

        // The digits of value at text[at..at + count], then the separator after them.
        static void Digits(Span<T> text, int at, int value, int count, char after)
        {
            for (var i = at + count - 1; i >= at; i--)
            {
                text[i] = T.CreateTruncating('0' + (value % 10));
                value /= 10;
            }

            text[at + count] = T.CreateTruncating(after);
        }
    }

    /// <summary>
    /// What a decode that threw makes of the message's failure: the <see cref="MalformedMessageException"/> it threw, or one
    /// naming the exception that broke it.
    /// </summary>
    public static MalformedMessageException DecodeFailure(Exception exception)
    {
        ArgumentNullException.ThrowIfNull(exception);
        return exception as MalformedMessageException
            ?? new MalformedMessageException($"Malformed message: decoding it failed ({exception.GetType().Name}: {exception.Message})", exception);
    }

    /// <summary>A value read off the wire as a failure message quotes it: its first 64 characters.</summary>
    public static string Excerpt(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        return text.Length <= 64 ? text : text[..64] + "...";
    }

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

        return DerivedMessageId(Encoding.UTF8.GetBytes(messageId).AsSpan());
    }

    /// <summary>
    /// A stable id derived from <paramref name="content"/> (SHA-256, as an RFC 9562 version 8 Guid): the same bytes always
    /// give the same id, so copies of a message that carries no id of its own keep one id.
    /// </summary>
    public static Guid DerivedMessageId(ReadOnlySpan<byte> content)
    {
        Span<byte> hash = stackalloc byte[32];
        SHA256.HashData(content, hash);
        return Version8(hash);
    }

    /// <summary>
    /// A stable id derived from several parts (each hashed with its length first, so <c>("ab", "c")</c> and
    /// <c>("a", "bc")</c> differ), as an RFC 9562 version 8 Guid: for a foreign message identified by what it carries.
    /// </summary>
    public static Guid DerivedMessageId(params ReadOnlySpan<ReadOnlyMemory<byte>> parts)
    {
        using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        Span<byte> length = stackalloc byte[4];
        foreach (var part in parts)
        {
            System.Buffers.Binary.BinaryPrimitives.WriteInt32BigEndian(length, part.Length);
            sha.AppendData(length);
            sha.AppendData(part.Span);
        }

        Span<byte> hash = stackalloc byte[32];
        sha.GetHashAndReset(hash);
        return Version8(hash);
    }

    private static Guid Version8(Span<byte> hash)
    {
        var bytes = hash[..16];
        bytes[6] = (byte)((bytes[6] & 0x0F) | 0x80);
        bytes[8] = (byte)((bytes[8] & 0x3F) | 0x80);
        return new Guid(bytes, bigEndian: true);
    }
}
