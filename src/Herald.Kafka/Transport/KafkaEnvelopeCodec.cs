using System.Collections.Frozen;
using System.Collections.ObjectModel;
using System.Globalization;
using System.Text;
using Confluent.Kafka;
using Herald.Internal;
using Herald.Messages;
using Herald.Transport;

namespace Herald.Kafka.Transport;

/// <summary>
/// Maps an <see cref="Envelope"/> onto a Kafka record in the CloudEvents Kafka protocol binding, binary content mode
/// (docs/cloudevents.md): the value is the data, the attributes are UTF-8 headers prefixed <c>ce_</c>, the content type
/// is the <c>content-type</c> header and the partition key is the record key. Herald's own bookkeeping (the attempt
/// count, a retry's due time and target, a dead letter's origin) travels in <c>x-herald-</c> headers. Also reads plain
/// records of other producers (no <c>ce_</c> headers, an <c>event-type</c> header, docs/kafka.md).
/// </summary>
internal static class KafkaEnvelopeCodec
{
    public const string Prefix = "ce_";
    public const string ContentTypeHeader = "content-type";

    /// <summary>Deliveries before this copy was produced (Herald increments it each time it redelivers).</summary>
    public const string AttemptHeader = "x-herald-attempt";

    /// <summary>When a copy in a retry topic is due, in Unix milliseconds.</summary>
    public const string DueHeader = "x-herald-due";

    /// <summary>The topic a copy in a retry topic goes back to when it is due.</summary>
    public const string TargetHeader = "x-herald-target";

    /// <summary>The queue a copy in a dead-letter topic was dead-lettered from.</summary>
    public const string OriginQueueHeader = "x-herald-origin-queue";

    /// <summary>Why a copy in a dead-letter topic was dead-lettered.</summary>
    public const string ReasonHeader = "x-herald-dead-letter-reason";

    /// <summary>Where in its dead-letter topic a dead letter the store refused was first (its copies keep it, and so its id).</summary>
    public const string DeadLetterOriginHeader = "x-herald-dead-letter-origin";

    /// <summary>How often the dead-letter store refused a dead letter the drain copied to the end of its topic.</summary>
    public const string DrainRefusalsHeader = "x-herald-drain-refusals";

    /// <summary>The message type of a plain record (no <c>ce_</c> headers), as plain Kafka producers write it.</summary>
    public const string PlainTypeHeader = "event-type";

    /// <summary>The source of a plain record (no <c>ce_</c> headers).</summary>
    public const string PlainSourceHeader = "event-source";

    /// <summary>
    /// On Herald's copy of a plain record (a redelivery, a delayed retry, a dead letter): the producer's timestamp of the
    /// record first consumed, in Unix milliseconds. The copy's own timestamp is the copy's, and the plain record's id and time
    /// are derived from this one, so every copy is the same message.
    /// </summary>
    public const string PlainTimeHeader = "x-herald-plain-time";

    /// <summary>The latest Unix millisecond of the year 9999: a time header past it is no time Herald writes.</summary>
    public const long MaxUnixMilliseconds = 253402300799999;

    private static readonly byte[] SpecVersion = "1.0"u8.ToArray();

    // A header named like an attribute the envelope carries itself is not sent: as a second ce_ header of that name it
    // would be read in the attribute's place (the last one wins), as on RabbitMQ and NATS.
    private static readonly FrozenSet<string> ReservedAttributes = CloudEventValues.EnvelopeAttributes.ToFrozenSet(StringComparer.Ordinal);

    /// <summary>The record for <paramref name="envelope"/>: key from the partition key, attributes in headers.</summary>
    public static Message<byte[]?, byte[]> Encode(Envelope envelope, string defaultSource)
    {
        var headers = new Headers
        {
            { Prefix + "specversion", SpecVersion },
            { Prefix + "id", Utf8(envelope.MessageId.ToString("D")) },
            { Prefix + "type", Utf8(envelope.MessageType) },
            { Prefix + "source", Utf8(envelope.GetHeader(HeaderNames.Source) ?? defaultSource) },
            { Prefix + "time", CloudEventValues.FormatTimeUtf8(envelope.Time) },
            { ContentTypeHeader, Utf8(envelope.ContentType) },
        };
        if (envelope.SchemaVersion != 1)
        {
            headers.Add(Prefix + "dataschema", Utf8(CloudEventValues.DataSchema(envelope.MessageType, envelope.SchemaVersion)));
        }

        AddIfSet(headers, "correlationid", envelope.CorrelationId);
        AddIfSet(headers, "causationid", envelope.CausationId);
        AddIfSet(headers, "userid", envelope.UserId);
        AddIfSet(headers, "partitionkey", envelope.PartitionKey);
        foreach (var (name, value) in envelope.Headers)
        {
            if (name != HeaderNames.Source && !ReservedAttributes.Contains(name))
            {
                headers.Add(Prefix + name, Utf8(value));
            }
        }

        return new Message<byte[]?, byte[]>
        {
            Key = envelope.PartitionKey is null ? null : Utf8(envelope.PartitionKey),
            Value = envelope.Body.ToArray(),
            Headers = headers,
        };
    }

    /// <summary>
    /// A copy of a consumed record for producing it again (retry, redelivery, dead letter): the same key, value and
    /// headers, with <paramref name="bookkeeping"/> replacing Herald's own headers (a null value removes one) and
    /// <paramref name="added"/> set as CloudEvents extension attributes (so they read back as envelope headers).
    /// </summary>
    public static Message<byte[]?, byte[]> CopyForRepublish(
        Message<byte[]?, byte[]> message,
        IEnumerable<KeyValuePair<string, string?>> bookkeeping,
        IReadOnlyDictionary<string, string>? added)
    {
        var replaced = new HashSet<string>(StringComparer.Ordinal);
        var headers = new Headers();
        foreach (var (name, value) in bookkeeping)
        {
            replaced.Add(name);
            if (value is not null)
            {
                headers.Add(name, Utf8(value));
            }
        }

        if (added is not null)
        {
            foreach (var (name, value) in added)
            {
                replaced.Add(Prefix + name);
                headers.Add(Prefix + name, Utf8(value));
            }
        }

        bool hasId = false, plain = false, hasPlainTime = false;
        if (message.Headers is not null)
        {
            foreach (var header in message.Headers)
            {
                hasId |= header.Key == Prefix + "id";
                plain |= header.Key == PlainTypeHeader;
                hasPlainTime |= header.Key == PlainTimeHeader;
                if (!replaced.Contains(header.Key))
                {
                    headers.Add(header.Key, header.GetValueBytes());
                }
            }
        }

        // A plain record's id is derived from its producer's time, which the copy (a new record) does not have: it is kept
        // in a header, once (a copy of a copy has it already).
        if (plain && !hasId && !hasPlainTime && message.Timestamp.Type == TimestampType.CreateTime)
        {
            headers.Add(PlainTimeHeader, Utf8(message.Timestamp.UnixTimestampMs.ToString(CultureInfo.InvariantCulture)));
        }

        return new Message<byte[]?, byte[]> { Key = message.Key, Value = message.Value ?? [], Headers = headers, Timestamp = Timestamp.Default };
    }

    /// <summary>
    /// Turns a consumed record into an envelope; never throws. When it is malformed (or decoding throws for any reason),
    /// <paramref name="failure"/> says why and the envelope holds what could be read, so its dead letter shows as much as possible.
    /// <paramref name="texts"/>, when given, hands out the same string for the attribute values records repeat (type,
    /// source, content type) instead of a new one per record; it belongs to one thread.
    /// </summary>
    public static Envelope Decode(Message<byte[]?, byte[]> message, string defaultSource, TimeProvider timeProvider, out MalformedMessageException? failure, RepeatedTexts? texts = null)
    {
        try
        {
            failure = null;
            return DecodeOrThrow(message, defaultSource, texts);
        }
#pragma warning disable CA1031 // Nothing from the wire is trusted: whatever decoding throws makes the delivery undecodable.
        catch (Exception e)
#pragma warning restore CA1031
        {
            failure = CloudEventValues.DecodeFailure(e);
        }

        return BestEffort(message, timeProvider);
    }

    /// <summary>Deliveries so far including this one: the attempt header Herald writes when it redelivers, else 1.</summary>
    public static int Attempt(Message<byte[]?, byte[]> message) =>
        message.Headers is not null && message.Headers.TryGetLastBytes(AttemptHeader, out var bytes) ? Attempt(bytes) : 1;

    /// <summary>The attempt count an attempt header's value holds (digits only, at least 1), else 1.</summary>
    private static int Attempt(ReadOnlySpan<byte> value) =>
        int.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out var attempt) && attempt >= 1 ? attempt : 1;

    /// <summary>A time Herald wrote in a header: Unix milliseconds in digits, up to the year 9999; false for anything else.</summary>
    public static bool TryParseUnixMilliseconds(ReadOnlySpan<byte> value, out long milliseconds) =>
        long.TryParse(value, NumberStyles.None, CultureInfo.InvariantCulture, out milliseconds) && milliseconds <= MaxUnixMilliseconds;

    /// <summary>The text of a header (the last one of that name), or null when it is absent or not UTF-8.</summary>
    public static string? Header(Message<byte[]?, byte[]> message, string name)
    {
        if (message.Headers is null || !message.Headers.TryGetLastBytes(name, out var bytes) || bytes is null)
        {
            return null;
        }

        try
        {
            return StrictUtf8.GetString(bytes);
        }
        catch (DecoderFallbackException)
        {
            return null;
        }
    }

    private static readonly UTF8Encoding StrictUtf8 = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);

    private static Envelope DecodeOrThrow(Message<byte[]?, byte[]> message, string defaultSource, RepeatedTexts? texts)
    {
        Dictionary<string, string>? headers = null;

        // The id and the time are parsed from their bytes (text only for an error message or a form read the slow way);
        // the last of each name wins, as it does for the other attributes.
        byte[]? ceId = null, ceTime = null, attempt = null, plainTime = null;
        string? ceType = null, ceSource = null, ceSchema = null, contentType = null;
        string? ceCorrelation = null, ceCausation = null, ceUser = null, cePartition = null;
        if (message.Headers is { } recordHeaders)
        {
            // By index: the client's enumerator is an object per record.
            for (var i = 0; i < recordHeaders.Count; i++)
            {
                var header = recordHeaders[i];
                var name = header.Key;
                var bytes = header.GetValueBytes() ?? [];
                if (name.StartsWith("x-herald-", StringComparison.Ordinal))
                {
                    if (name == AttemptHeader)
                    {
                        attempt = bytes;
                    }
                    else if (name == PlainTimeHeader)
                    {
                        plainTime = bytes;
                    }

                    continue;
                }

                if (!System.Text.Unicode.Utf8.IsValid(bytes))
                {
                    throw new MalformedMessageException($"Malformed message: its header '{CloudEventValues.Excerpt(name)}' is not UTF-8 text.");
                }

                if (name == ContentTypeHeader)
                {
                    contentType = Text(bytes, texts);
                }
                else if (name.StartsWith(Prefix, StringComparison.Ordinal))
                {
                    // Matched as a span: a substring per attribute per record is garbage on the consume path.
                    var attribute = name.AsSpan(Prefix.Length);
                    switch (attribute)
                    {
                        case "specversion": break;
                        case "id": ceId = bytes; break;
                        case "type": ceType = Text(bytes, texts); break;
                        case "source": ceSource = Text(bytes, texts); break;
                        case "time": ceTime = bytes; break;
                        case "dataschema": ceSchema = Text(bytes, texts); break;
                        case "datacontenttype": contentType ??= Text(bytes, texts); break;
                        case "correlationid": ceCorrelation = StrictUtf8.GetString(bytes); break;
                        case "causationid": ceCausation = StrictUtf8.GetString(bytes); break;
                        case "userid": ceUser = StrictUtf8.GetString(bytes); break;
                        case "partitionkey": cePartition = StrictUtf8.GetString(bytes); break;
                        case "deliveryattempt": break;
                        default: (headers ??= new Dictionary<string, string>(StringComparer.Ordinal))[attribute.ToString()] = StrictUtf8.GetString(bytes); break;
                    }
                }
                else
                {
                    // A plain header from another client: kept, so a handler can read it.
                    (headers ??= new Dictionary<string, string>(StringComparer.Ordinal)).TryAdd(name, StrictUtf8.GetString(bytes));
                }
            }
        }

        if (ceId is null && ceType is null && ceTime is null && headers is not null && headers.Remove(PlainTypeHeader, out var plainType))
        {
            headers.Remove(PlainSourceHeader, out var plainSource);
            return DecodePlain(message, plainType, plainSource, contentType, headers, defaultSource, Attempt(attempt), plainTime);
        }

        if (ceId is null)
        {
            throw new MalformedMessageException($"Malformed message: it has no id (no ce_id header), and it is no plain record (no {PlainTypeHeader} header).");
        }

        if (!Guid.TryParse(ceId, out var id) && !Guid.TryParse(StrictUtf8.GetString(ceId), out id))
        {
            throw new MalformedMessageException($"Malformed message: its id '{CloudEventValues.Excerpt(StrictUtf8.GetString(ceId))}' is not a Guid.");
        }

        if (string.IsNullOrEmpty(ceType))
        {
            throw new MalformedMessageException($"Malformed message {id}: it has no type (no ce_type header).");
        }

        if (ceTime is null)
        {
            throw new MalformedMessageException($"Malformed message {id}: it has no time (no ce_time header).");
        }

        var time = CloudEventValues.TryParseExactTime(ceTime, out var ownTime) ? ownTime : ParseTime(StrictUtf8.GetString(ceTime))
            ?? throw new MalformedMessageException($"Malformed message {id}: its time '{CloudEventValues.Excerpt(StrictUtf8.GetString(ceTime))}' is not an RFC 3339 time.");
        if (ceSource is not null && ceSource != defaultSource)
        {
            (headers ??= new Dictionary<string, string>(StringComparer.Ordinal))[HeaderNames.Source] = ceSource;
        }

        return new Envelope
        {
            MessageId = id,
            MessageType = ceType,
            SchemaVersion = ceSchema is null ? 1 : CloudEventValues.SchemaVersion(ceSchema),
            Time = time,
            CorrelationId = ceCorrelation,
            CausationId = ceCausation,
            UserId = ceUser,
            PartitionKey = cePartition ?? KeyText(message.Key),
            ContentType = string.IsNullOrEmpty(contentType) ? ContentTypes.Json : contentType,
            Headers = headers ?? (IReadOnlyDictionary<string, string>)ReadOnlyDictionary<string, string>.Empty,
            Body = message.Value ?? [],
            DeliveryAttempt = Attempt(attempt),
        };
    }

    /// <summary>The text of valid UTF-8 <paramref name="bytes"/>: one held by <paramref name="texts"/> when it has it.</summary>
    private static string Text(byte[] bytes, RepeatedTexts? texts) => texts is null ? StrictUtf8.GetString(bytes) : texts.Get(bytes);

    /// <summary>
    /// A plain record of another producer: the type from <c>event-type</c>, the source from <c>event-source</c>, the partition
    /// key from the record key, the time from the record's timestamp, and an id derived from what the record carries (type,
    /// source, key, producer timestamp, value), so the same record sent twice has one id and the inbox takes it once. On
    /// Herald's copy of one (a redelivery), the producer's timestamp is the original's, which the copy carries in
    /// <see cref="PlainTimeHeader"/> (one that is no time Herald writes is left aside).
    /// </summary>
    private static Envelope DecodePlain(
        Message<byte[]?, byte[]> message, string type, string? source, string? contentType, Dictionary<string, string> headers, string defaultSource, int attempt, byte[]? plainTime)
    {
        if (type.Length == 0)
        {
            throw new MalformedMessageException($"Malformed message: its {PlainTypeHeader} header is empty.");
        }

        var key = KeyText(message.Key);
        var timestamp = plainTime is not null && TryParseUnixMilliseconds(plainTime, out var original)
            ? new Timestamp(original, TimestampType.CreateTime)
            : message.Timestamp;
        var time = timestamp.Type == TimestampType.NotAvailable ? (DateTimeOffset?)null : DateTimeOffset.FromUnixTimeMilliseconds(timestamp.UnixTimestampMs);

        // Only the producer's own time identifies the record: the broker's append time differs for each copy.
        Span<byte> created = stackalloc byte[8];
        System.Buffers.Binary.BinaryPrimitives.WriteInt64BigEndian(created, timestamp.Type == TimestampType.CreateTime ? timestamp.UnixTimestampMs : -1);
        var id = CloudEventValues.DerivedMessageId(
            PlainIdMarker, Utf8(type), source is null ? Array.Empty<byte>() : Utf8(source), message.Key ?? [], created.ToArray(), message.Value ?? []);
        if (source is not null && source != defaultSource)
        {
            headers[HeaderNames.Source] = source;
        }

        return new Envelope
        {
            MessageId = id,
            MessageType = type,
            Time = time ?? throw new MalformedMessageException($"Malformed message: the plain record of type '{CloudEventValues.Excerpt(type)}' has no timestamp."),
            PartitionKey = key,
            ContentType = string.IsNullOrEmpty(contentType) ? ContentTypes.Json : contentType,
            Headers = headers,
            Body = message.Value ?? [],
            DeliveryAttempt = attempt,
        };
    }

    private static readonly byte[] PlainIdMarker = "herald:kafka:plain"u8.ToArray();

    /// <summary>What can be read of a malformed message, each part on its own, so one bad attribute hides no other.</summary>
    private static Envelope BestEffort(Message<byte[]?, byte[]> message, TimeProvider timeProvider)
    {
        var id = Salvage.Read(() => Header(message, Prefix + "id") is { } text && Guid.TryParse(text, out var parsed) ? parsed : Guid.Empty, Guid.Empty);
        var type = Salvage.Read(() => Header(message, Prefix + "type") ?? Header(message, PlainTypeHeader), null);
        var time = Salvage.Read(() => Header(message, Prefix + "time") is { } text ? ParseTime(text) : null, null);
        var headers = new Dictionary<string, string>(StringComparer.Ordinal);
        if (message.Headers is not null)
        {
            foreach (var header in message.Headers)
            {
                if (Salvage.Read(() => header.GetValueBytes() is { } b ? StrictUtf8.GetString(b) : string.Empty, null) is { } text)
                {
                    headers.TryAdd(header.Key, text);
                }
            }
        }

        return new Envelope
        {
            MessageId = id,
            MessageType = type ?? string.Empty,
            Time = time ?? timeProvider.GetUtcNow(),
            PartitionKey = Salvage.Read(() => KeyText(message.Key), null),
            Headers = headers,
            Body = message.Value ?? [],
            DeliveryAttempt = Attempt(message),
        };
    }

    private static DateTimeOffset? ParseTime(string text) => CloudEventValues.TryParseTime(text, out var time) ? time : null;

    private static string? KeyText(byte[]? key) => key is null ? null : StrictUtf8.GetString(key);

    private static void AddIfSet(Headers headers, string attribute, string? value)
    {
        if (value is not null)
        {
            headers.Add(Prefix + attribute, Utf8(value));
        }
    }

    private static byte[] Utf8(string value) => Encoding.UTF8.GetBytes(value);
}
