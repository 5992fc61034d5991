using System.Collections.Frozen;
using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using Herald.Messages;
using RabbitMQ.Client;

namespace Herald.RabbitMQ;

/// <summary>
/// Maps an <see cref="Envelope"/> onto an AMQP 0-9-1 message in CloudEvents binary mode (docs/cloudevents.md): the body
/// is the data, the attributes are headers prefixed <c>cloudEvents:</c>, and message_id, timestamp, correlation_id,
/// type and content_type are set too so plain clients see them. Reads both that shape and plain JSON (raw queues).
/// </summary>
internal static class AmqpEnvelopeCodec
{
    public const string Prefix = "cloudEvents:";

    /// <summary>Deliveries before this copy was published (Herald increments it each time it redelivers).</summary>
    public const string AttemptHeader = "x-herald-attempt";

    public const string OriginQueueHeader = "x-herald-origin-queue";

    private const string SchemaPrefix = "urn:herald:schema:";
    private const string TimeFormat = "yyyy-MM-dd'T'HH:mm:ss.fff'Z'";

    private static readonly FrozenSet<string> ReservedAttributes = FrozenSet.ToFrozenSet(
        ["id", "type", "source", "specversion", "time", "dataschema", "datacontenttype", "partitionkey", "correlationid", "causationid", "userid", "deliveryattempt"],
        StringComparer.Ordinal);

    // Headers the client or the broker adds to a copy; a republished copy must not carry them over.
    private static readonly FrozenSet<string> DroppedOnRepublish = FrozenSet.ToFrozenSet(
        ["x-delivery-count", Constants.PublishSequenceNumberHeader],
        StringComparer.Ordinal);

    public static BasicProperties Encode(Envelope envelope, string defaultSource)
    {
        var headers = new Dictionary<string, object?>(envelope.Headers.Count + 12, StringComparer.Ordinal);
        var source = defaultSource;
        foreach (var (name, value) in envelope.Headers)
        {
            if (name == HeaderNames.Source)
            {
                source = value;
            }
            else if (!ReservedAttributes.Contains(name))
            {
                headers[Prefix + name] = value;
            }
        }

        var id = envelope.MessageId.ToString("D");
        headers[Prefix + "specversion"] = "1.0";
        headers[Prefix + "id"] = id;
        headers[Prefix + "type"] = envelope.MessageType;
        headers[Prefix + "source"] = source;
        headers[Prefix + "time"] = envelope.Time.UtcDateTime.ToString(TimeFormat, CultureInfo.InvariantCulture);
        headers[Prefix + "dataschema"] = string.Create(CultureInfo.InvariantCulture, $"{SchemaPrefix}{envelope.MessageType}:{envelope.SchemaVersion}");
        AddIfSet(headers, "partitionkey", envelope.PartitionKey);
        AddIfSet(headers, "correlationid", envelope.CorrelationId);
        AddIfSet(headers, "causationid", envelope.CausationId);
        AddIfSet(headers, "userid", envelope.UserId);

        // The AMQP user_id is checked by the broker against the login, so the user travels only as an attribute.
        return new BasicProperties
        {
            MessageId = id,
            Type = envelope.MessageType,
            Timestamp = new AmqpTimestamp(envelope.Time.ToUnixTimeSeconds()),
            CorrelationId = envelope.CorrelationId,
            ContentType = envelope.ContentType,
            DeliveryMode = DeliveryModes.Persistent,
            Headers = headers,
        };
    }

    /// <summary>A copy of a delivered message's properties for republishing it (retry, redelivery, dead letter).</summary>
    public static BasicProperties CopyForRepublish(IReadOnlyBasicProperties delivered, int attempts, string? deadLetterReason, string? originQueue)
    {
        var properties = new BasicProperties(delivered) { DeliveryMode = DeliveryModes.Persistent };
        var headers = new Dictionary<string, object?>(StringComparer.Ordinal);
        if (delivered.Headers is { } original)
        {
            foreach (var (name, value) in original)
            {
                if (!DroppedOnRepublish.Contains(name))
                {
                    headers[name] = value;
                }
            }
        }

        headers[AttemptHeader] = attempts;
        if (deadLetterReason is not null)
        {
            headers[Prefix + HeaderNames.DeadLetterReason] = deadLetterReason;
            headers[OriginQueueHeader] = originQueue;
        }

        properties.Headers = headers;
        return properties;
    }

    /// <summary>
    /// Turns a delivered message into an envelope, or says why it is malformed. <paramref name="rawType"/> is the type
    /// for plain messages on a raw queue (null: the queue takes CloudEvents messages only).
    /// </summary>
    public static bool TryDecode(
        IReadOnlyBasicProperties properties,
        ReadOnlyMemory<byte> body,
        bool redelivered,
        string? rawType,
        string defaultSource,
        TimeProvider timeProvider,
        out Envelope? envelope,
        out string? error)
    {
        envelope = null;
        var amqpHeaders = properties.Headers;
        var isCloudEvent = amqpHeaders is not null
            && (amqpHeaders.ContainsKey(Prefix + "specversion") || amqpHeaders.ContainsKey(Prefix + "type") || amqpHeaders.ContainsKey(Prefix + "id"));
        var attempt = Attempt(properties, redelivered);
        var headers = new Dictionary<string, string>(StringComparer.Ordinal);
        string? ce(string name) => amqpHeaders is not null && amqpHeaders.TryGetValue(Prefix + name, out var v) ? AsString(v) : null;

        if (amqpHeaders is not null)
        {
            foreach (var (name, value) in amqpHeaders)
            {
                if (name.StartsWith(Prefix, StringComparison.Ordinal))
                {
                    var attribute = name[Prefix.Length..];
                    if (!ReservedAttributes.Contains(attribute) && AsString(value) is { } text)
                    {
                        headers[attribute] = text;
                    }
                }
                else if (!name.StartsWith("x-", StringComparison.Ordinal) && AsString(value) is { } text)
                {
                    headers.TryAdd(name, text);
                }
            }
        }

        if (!isCloudEvent && rawType is not null)
        {
            envelope = new Envelope
            {
                MessageId = RawMessageId(properties.MessageId, timeProvider),
                MessageType = rawType,
                Time = AmqpTime(properties) ?? timeProvider.GetUtcNow(),
                CorrelationId = properties.CorrelationId,
                ContentType = properties.ContentType ?? ContentTypes.Json,
                Headers = headers,
                Body = body,
                DeliveryAttempt = attempt,
            };
            error = null;
            return true;
        }

        var idText = ce("id") ?? properties.MessageId;
        if (idText is null)
        {
            error = "Malformed message: it has no id (no cloudEvents:id attribute and no AMQP message_id).";
            return false;
        }

        if (!Guid.TryParse(idText, out var id))
        {
            error = $"Malformed message: its id '{Truncate(idText)}' is not a Guid.";
            return false;
        }

        var type = ce("type") ?? properties.Type;
        if (string.IsNullOrEmpty(type))
        {
            error = $"Malformed message {id}: it has no type (no cloudEvents:type attribute and no AMQP type), and the queue is not a raw queue.";
            return false;
        }

        DateTimeOffset time;
        if (ce("time") is { } timeText)
        {
            if (!DateTimeOffset.TryParse(timeText, CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal | DateTimeStyles.AdjustToUniversal, out time))
            {
                error = $"Malformed message {id}: its time '{Truncate(timeText)}' is not an RFC 3339 time.";
                return false;
            }
        }
        else if (AmqpTime(properties) is { } amqpTime)
        {
            time = amqpTime;
        }
        else
        {
            error = $"Malformed message {id}: it has no time (no cloudEvents:time attribute and no AMQP timestamp).";
            return false;
        }

        if (ce("source") is { } source && source != defaultSource)
        {
            headers[HeaderNames.Source] = source;
        }

        envelope = new Envelope
        {
            MessageId = id,
            MessageType = type,
            SchemaVersion = SchemaVersion(ce("dataschema")),
            Time = time,
            CorrelationId = ce("correlationid") ?? properties.CorrelationId,
            CausationId = ce("causationid"),
            UserId = ce("userid"),
            PartitionKey = ce("partitionkey"),
            ContentType = properties.ContentType ?? ce("datacontenttype") ?? ContentTypes.Json,
            Headers = headers,
            Body = body,
            DeliveryAttempt = attempt,
        };
        error = null;
        return true;
    }

    /// <summary>
    /// Deliveries so far including this one: Herald's own count of redeliveries it published, plus the broker's count of
    /// returns of this copy (quorum <c>x-delivery-count</c>, else 1 when the redelivered flag is set).
    /// </summary>
    public static int Attempt(IReadOnlyBasicProperties properties, bool redelivered)
    {
        var headers = properties.Headers;
        var before = headers is not null && headers.TryGetValue(AttemptHeader, out var a) ? AsInt(a) : 0;
        var returns = headers is not null && headers.TryGetValue("x-delivery-count", out var d) ? AsInt(d) : (redelivered ? 1 : 0);
        return Math.Max(0, before) + 1 + Math.Max(0, returns);
    }

    public static string? AsString(object? value) => value switch
    {
        null => null,
        string s => s,
        byte[] bytes => Encoding.UTF8.GetString(bytes),
        bool b => b ? "true" : "false",
        AmqpTimestamp t => t.UnixTime.ToString(CultureInfo.InvariantCulture),
        IFormattable f => f.ToString(null, CultureInfo.InvariantCulture),
        _ => null,
    };

    private static int AsInt(object? value) => value switch
    {
        int i => i,
        long l => (int)Math.Clamp(l, int.MinValue, int.MaxValue),
        short s => s,
        byte b => b,
        sbyte sb => sb,
        ushort us => us,
        uint ui => (int)Math.Min(ui, int.MaxValue),
        _ => int.TryParse(AsString(value), NumberStyles.Integer, CultureInfo.InvariantCulture, out var parsed) ? parsed : 0,
    };

    private static DateTimeOffset? AmqpTime(IReadOnlyBasicProperties properties)
    {
        if (!properties.IsTimestampPresent() || properties.Timestamp.UnixTime <= 0)
        {
            return null;
        }

        // AMQP timestamps are seconds; some clients (Node's Date.now()) send milliseconds. No real time in seconds is this large.
        var value = properties.Timestamp.UnixTime;
        return value > 100_000_000_000L ? DateTimeOffset.FromUnixTimeMilliseconds(value) : DateTimeOffset.FromUnixTimeSeconds(value);
    }

    private static Guid RawMessageId(string? messageId, TimeProvider timeProvider)
    {
        if (messageId is null)
        {
            return Guid.CreateVersion7(timeProvider.GetUtcNow());
        }

        if (Guid.TryParse(messageId, out var id))
        {
            return id;
        }

        // A stable id for the same foreign message_id, so redeliveries and duplicates keep one id (RFC 9562 version 8).
        Span<byte> hash = stackalloc byte[32];
        SHA256.HashData(Encoding.UTF8.GetBytes(messageId), hash);
        var bytes = hash[..16];
        bytes[6] = (byte)((bytes[6] & 0x0F) | 0x80);
        bytes[8] = (byte)((bytes[8] & 0x3F) | 0x80);
        return new Guid(bytes, bigEndian: true);
    }

    private static int SchemaVersion(string? dataSchema)
    {
        if (dataSchema is not null
            && dataSchema.StartsWith(SchemaPrefix, StringComparison.Ordinal)
            && dataSchema.LastIndexOf(':') is var colon and > 0
            && int.TryParse(dataSchema.AsSpan(colon + 1), NumberStyles.None, CultureInfo.InvariantCulture, out var version)
            && version >= 1)
        {
            return version;
        }

        return 1;
    }

    private static void AddIfSet(Dictionary<string, object?> headers, string attribute, string? value)
    {
        if (value is not null)
        {
            headers[Prefix + attribute] = value;
        }
    }

    private static string Truncate(string text) => text.Length <= 64 ? text : text[..64] + "...";
}
