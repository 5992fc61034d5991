using System.Collections.Frozen;
using System.Buffers.Text;
using System.Globalization;
using System.Text;
using Herald.Internal;
using Herald.Messages;
using Herald.Transport;
using RabbitMQ.Client;

namespace Herald.RabbitMQ.Transport;

/// <summary>
/// Maps an <see cref="Envelope"/> onto an AMQP 0-9-1 message in CloudEvents binary mode (docs/cloudevents.md): the body
/// is the data; id, type, source, correlationid and datacontenttype travel in the AMQP properties made for them
/// (message_id, type, app_id, correlation_id, content_type), every other attribute as a header prefixed
/// <c>cloudEvents:</c> (docs/rabbitmq.md says why). Reads that shape, the all-headers shape of older Herald senders
/// and other CloudEvents clients, and plain JSON (raw queues).
/// </summary>
internal static class AmqpEnvelopeCodec
{
    public const string Prefix = "cloudEvents:";

    /// <summary>Deliveries before this copy was published (Herald increments it each time it redelivers).</summary>
    public const string AttemptHeader = "x-herald-attempt";

    public const string OriginQueueHeader = "x-herald-origin-queue";

    private const string DeliveryCountHeader = "x-delivery-count";
    private const string AcquiredCountHeader = "x-acquired-count";
    private const string DeathHeader = "x-death";
    private const int CharBufferLength = 256;


    private static readonly long MaxUnixMilliseconds = DateTimeOffset.MaxValue.ToUnixTimeMilliseconds();
    private static readonly Dictionary<string, object?> EmptyAmqpHeaders = [];

    private static readonly IReadOnlyDictionary<string, string> NoHeaders = FrozenDictionary<string, string>.Empty;

    private static readonly byte[] SpecVersion = "1.0"u8.ToArray();

    // The last time written, to the millisecond (UTC ticks), and its text (see FormatTime).
    private static TimeText? _lastTime;

    // Header keys, and values that repeat from message to message (types, sources, schemas), encoded once.
    private static readonly BoundedCache<string, byte[]> Utf8Constants = new(static s => Encoding.UTF8.GetBytes(s));
    private static readonly BoundedCache<string, string> PrefixedNames = new(static name => Prefix + name);
    private static readonly BoundedCache<(string Type, int Version), byte[]> DataSchemas = new(
        static key => Encoding.UTF8.GetBytes(CloudEventValues.DataSchema(key.Type, key.Version)));

    private static readonly FrozenSet<string> ReservedAttributes = CloudEventValues.EnvelopeAttributes.ToFrozenSet(StringComparer.Ordinal);

    // Headers the client or the broker adds to a copy, or that the broker acts on; a republished copy must not carry them
    // over. x-death: the broker reads it when a retry queue dead-letters the copy back, and a sender's malformed one (a list
    // that is not of tables) crashes that queue on RabbitMQ 3.10, stranding every message waiting in it; Herald never reads
    // it. CC and BCC (sender-selected distribution): the broker routes a copy to every queue they name, as it did the
    // sender's publish, so each retry would duplicate the message there.
    private static readonly FrozenSet<string> DroppedOnRepublish = FrozenSet.ToFrozenSet(
        [DeliveryCountHeader, AcquiredCountHeader, DeathHeader, "CC", "BCC", Constants.PublishSequenceNumberHeader],
        StringComparer.Ordinal);

    public static BasicProperties Encode(Envelope envelope, string defaultSource)
    {
        var custom = envelope.Headers;
        var type = envelope.MessageType;
        string? source = null;

        // Where AMQP has a property for an attribute, the property alone carries it (message_id, type, app_id,
        // correlation_id, content_type): every header costs the broker CPU on each hop of each message (docs/rabbitmq.md).
        // A value too long for a property (short strings hold 255 bytes) travels as a header instead.
        var typeInHeader = !FitsShortString(type);
        var correlationInHeader = envelope.CorrelationId is { } correlation && !FitsShortString(correlation);

        // Sized for what goes in (specversion, time, the optional ones), plus the publish sequence number the client adds
        // with confirms on: never resized. Without headers of its own the source is the default one, known now: the usual
        // message takes a table of 3 (one of 7 with room for a source header it does not have was 112 bytes more).
        var optional = (envelope.SchemaVersion != 1 ? 1 : 0) + (envelope.PartitionKey is null ? 0 : 1) + (correlationInHeader ? 1 : 0)
            + (envelope.CausationId is null ? 0 : 1) + (envelope.UserId is null ? 0 : 1) + (typeInHeader ? 1 : 0);
        var sourceSlot = custom.Count > 0 || !FitsShortString(defaultSource) ? 1 : 0;
        var headers = new Dictionary<string, object?>(custom.Count + optional + sourceSlot + 3, StringComparer.Ordinal);
        if (custom.Count > 0)
        {
            foreach (var (name, value) in custom)
            {
                if (name == HeaderNames.Source)
                {
                    source = value;
                }
                else if (!ReservedAttributes.Contains(name))
                {
                    headers[PrefixedNames.Get(name)] = value;
                }
            }
        }

        source ??= defaultSource;
        var sourceInHeader = !FitsShortString(source);

        // Constant or repeating values go out as cached UTF-8 bytes (written as AMQP long strings, as a string would be).
        headers[Prefix + "specversion"] = SpecVersion;
        headers[Prefix + "time"] = FormatTime(envelope.Time);
        if (typeInHeader)
        {
            headers[Prefix + "type"] = Utf8Constants.Get(type);
        }

        if (sourceInHeader)
        {
            headers[Prefix + "source"] = Utf8Constants.Get(source);
        }

        if (envelope.SchemaVersion != 1)
        {
            // Version 1 is what a message without a dataschema reads as: the most common case costs no header.
            headers[Prefix + "dataschema"] = DataSchemas.Get((type, envelope.SchemaVersion));
        }

        AddIfSet(headers, Prefix + "partitionkey", envelope.PartitionKey);
        if (correlationInHeader)
        {
            headers[Prefix + "correlationid"] = envelope.CorrelationId;
        }

        AddIfSet(headers, Prefix + "causationid", envelope.CausationId);
        AddIfSet(headers, Prefix + "userid", envelope.UserId);

        // The AMQP user_id is checked by the broker against the login, so the user travels only as an attribute.
        return new BasicProperties
        {
            MessageId = envelope.MessageId.ToString("D"),
            Type = typeInHeader ? null : type,
            AppId = sourceInHeader ? null : source,
            Timestamp = new AmqpTimestamp(envelope.Time.ToUnixTimeSeconds()),
            CorrelationId = correlationInHeader ? null : envelope.CorrelationId,
            ContentType = envelope.ContentType,
            DeliveryMode = DeliveryModes.Persistent,
            Headers = headers,
        };
    }

    /// <summary>Whether the text fits an AMQP short string (at most 255 bytes in UTF-8).</summary>
    internal static bool FitsShortString(string text) => text.Length <= 85 || Encoding.UTF8.GetByteCount(text) <= 255;

    /// <summary>The time in UTF-8 as every transport writes it (<see cref="CloudEventValues.FormatTimeUtf8"/>).</summary>
    /// <remarks>
    /// The text of the last millisecond written is kept and handed out again (as the specversion's bytes are): messages
    /// sent in the same millisecond, most of them under load, share it instead of each formatting and allocating its own.
    /// No one writes into it: the client only copies it onto the wire.
    /// </remarks>
    internal static byte[] FormatTime(DateTimeOffset time)
    {
        var ticks = time.UtcTicks;
        var millisecond = ticks - (ticks % TimeSpan.TicksPerMillisecond);
        if (Volatile.Read(ref _lastTime) is { } last && last.Millisecond == millisecond)
        {
            return last.Utf8;
        }

        var text = CloudEventValues.FormatTimeUtf8(time);
        Volatile.Write(ref _lastTime, new TimeText(millisecond, text));
        return text;
    }

    /// <summary>Reads a time in exactly the form <see cref="FormatTime"/> writes; false for anything else (which then goes through the general parser).</summary>
    internal static bool TryParseTime(ReadOnlySpan<byte> text, out DateTimeOffset time) => CloudEventValues.TryParseExactTime(text, out time);

    /// <summary>
    /// A copy of a delivered message's properties for republishing it (retry, redelivery, dead letter), with
    /// <paramref name="added"/> set as CloudEvents extension attributes (so they read back as envelope headers). A dead
    /// letter without a dead-letter id among them gets <paramref name="deadLetterId"/>.
    /// </summary>
    public static BasicProperties CopyForRepublish(
        IReadOnlyBasicProperties delivered,
        int attempts,
        string? deadLetterReason,
        string? originQueue,
        IReadOnlyDictionary<string, string>? added = null,
        Guid deadLetterId = default)
    {
        // Without the sender's user_id: the broker refuses (406, closing the channel) a publish whose user_id is not the
        // publisher's login, so a copy carrying another login's would never be stored, and its original would come round for ever.
        var properties = new BasicProperties(delivered) { DeliveryMode = DeliveryModes.Persistent, UserId = null };
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

        if (added is not null)
        {
            foreach (var (name, value) in added)
            {
                headers[Prefix + name] = value;
            }
        }

        headers[AttemptHeader] = attempts;
        if (deadLetterReason is not null)
        {
            // As RabbitMQ's own dead-lettering does: the dead-letter queue dead-letters nowhere, so a sender's per-message
            // TTL would delete the dead letter before it is drained into the store.
            properties.Expiration = null;
            headers[Prefix + HeaderNames.DeadLetterReason] = deadLetterReason;
            headers[OriginQueueHeader] = originQueue;

            // RabbitMQ gives a queued message no identity of its own: without this, a drain that read it again (stored,
            // then its ack lost with the connection) could not tell and stored it twice.
            if (deadLetterId != Guid.Empty)
            {
                headers.TryAdd(Prefix + HeaderNames.DeadLetterId, deadLetterId.ToString("D"));
            }
        }

        properties.Headers = headers;
        return properties;
    }

    /// <summary>
    /// Turns a delivered message into an envelope; never throws. When it is malformed, or decoding it throws for any
    /// reason, <paramref name="failure"/> says why and the envelope holds what could be read: the raw body, and the id,
    /// type, time and headers where they are readable (so its dead letter shows as much as possible).
    /// </summary>
    public static Envelope Decode(
        IReadOnlyBasicProperties properties, ReadOnlyMemory<byte> body, bool redelivered, string? rawType, string defaultSource, TimeProvider timeProvider,
        out MalformedMessageException? failure)
    {
        try
        {
            failure = null;
            return DecodeOrThrow(properties, body, redelivered, rawType, defaultSource, timeProvider);
        }
#pragma warning disable CA1031 // Nothing from the wire is trusted: whatever decoding throws makes the delivery undecodable.
        catch (Exception e)
#pragma warning restore CA1031
        {
            failure = CloudEventValues.DecodeFailure(e);
        }

        return BestEffort(properties, body, redelivered, rawType, timeProvider);
    }

    /// <summary>
    /// Turns a delivered message into an envelope, or throws <see cref="MalformedMessageException"/> saying why it is
    /// malformed. <paramref name="rawType"/> is the type for plain messages on a raw queue (null: the queue takes
    /// CloudEvents messages only).
    /// </summary>
    private static Envelope DecodeOrThrow(
        IReadOnlyBasicProperties properties,
        ReadOnlyMemory<byte> body,
        bool redelivered,
        string? rawType,
        string defaultSource,
        TimeProvider timeProvider)
    {
        var read = default(DeliveredHeaders);

        // One pass over the headers: attributes are kept as delivered (UTF-8 bytes) and turned into strings only as needed.
        // The client parses them into a Dictionary: enumerated as one, its enumerator is not boxed on every delivery.
        if (properties.Headers is Dictionary<string, object?> { Count: > 0 } parsed)
        {
            foreach (var (name, value) in parsed)
            {
                read.Add(name, value);
            }
        }
        else if (properties.Headers is { Count: > 0 } amqpHeaders)
        {
            foreach (var (name, value) in amqpHeaders)
            {
                read.Add(name, value);
            }
        }

        var headers = read.Headers;
        object? ceId = read.Id, ceType = read.Type, ceSource = read.Source, ceTime = read.Time, ceSchema = read.Schema, ceContentType = read.ContentType;
        object? ceCorrelation = read.Correlation, ceCausation = read.Causation, ceUser = read.User, cePartition = read.Partition;
        object? attemptValue = read.Attempt, deliveryCount = read.DeliveryCount;
        var isCloudEvent = read.IsCloudEvent;

        var attempt = Attempt(attemptValue, deliveryCount, redelivered);

        if (!isCloudEvent && rawType is not null)
        {
            return new Envelope
            {
                MessageId = CloudEventValues.ForeignMessageId(properties.MessageId, timeProvider),
                MessageType = rawType,
                Time = AmqpTime(properties) ?? timeProvider.GetUtcNow(),
                CorrelationId = properties.CorrelationId,
                ContentType = properties.ContentType ?? ContentTypes.Json,
                Headers = headers ?? NoHeaders,
                Body = body,
                DeliveryAttempt = attempt,
            };
        }

        Span<char> buffer = stackalloc char[CharBufferLength];
        Guid id;
        if (ceId is byte[] idBytes && Utf8Parser.TryParse(idBytes, out id, out var idLength, 'D') && idLength == idBytes.Length)
        {
            // The canonical form Herald writes, read straight from the bytes; anything else takes the general path below.
        }
        else if (ceId is not null && Chars(ceId, buffer, out var idChars))
        {
            if (!Guid.TryParse(idChars, out id))
            {
                throw new MalformedMessageException($"Malformed message: its id '{CloudEventValues.Excerpt(idChars.ToString())}' is not a Guid.");
            }
        }
        else if (properties.MessageId is { } messageId)
        {
            if (!Guid.TryParse(messageId, out id))
            {
                throw new MalformedMessageException($"Malformed message: its id '{CloudEventValues.Excerpt(messageId)}' is not a Guid.");
            }
        }
        else
        {
            throw new MalformedMessageException("Malformed message: it has no id (no cloudEvents:id attribute and no AMQP message_id).");
        }

        var type = InternedString(ceType) ?? properties.Type;
        if (string.IsNullOrEmpty(type))
        {
            throw new MalformedMessageException($"Malformed message {id}: it has no type (no cloudEvents:type attribute and no AMQP type), and the queue is not a raw queue.");
        }

        DateTimeOffset time;
        if (ceTime is byte[] timeBytes && TryParseTime(timeBytes, out time))
        {
            // The exact form Herald writes, read straight from the bytes; anything else takes the general path below.
        }
        else if (ceTime is not null && Chars(ceTime, buffer, out var timeChars))
        {
            if (!CloudEventValues.TryParseTime(timeChars, out time))
            {
                throw new MalformedMessageException($"Malformed message {id}: its time '{CloudEventValues.Excerpt(timeChars.ToString())}' is not an RFC 3339 time.");
            }
        }
        else if (AmqpTime(properties) is { } amqpTime)
        {
            time = amqpTime;
        }
        else
        {
            throw new MalformedMessageException($"Malformed message {id}: it has no time (no cloudEvents:time attribute and no AMQP timestamp).");
        }

        // The source as an attribute (older Herald senders, other CloudEvents clients, a source too long for app_id), else app_id.
        if (ceSource is not null)
        {
            if (Chars(ceSource, buffer, out var sourceChars) && !sourceChars.SequenceEqual(defaultSource))
            {
                (headers ??= new Dictionary<string, string>(StringComparer.Ordinal))[HeaderNames.Source] = InternedString(ceSource)!;
            }
        }
        else if (properties.AppId is { Length: > 0 } appId && appId != defaultSource)
        {
            (headers ??= new Dictionary<string, string>(StringComparer.Ordinal))[HeaderNames.Source] = appId;
        }

        var schemaVersion = ceSchema is not null && Chars(ceSchema, buffer, out var schemaChars) ? CloudEventValues.SchemaVersion(schemaChars) : 1;
        return new Envelope
        {
            MessageId = id,
            MessageType = type,
            SchemaVersion = schemaVersion,
            Time = time,
            CorrelationId = AsString(ceCorrelation) ?? properties.CorrelationId,
            CausationId = AsString(ceCausation),
            UserId = AsString(ceUser),
            PartitionKey = AsString(cePartition),
            ContentType = properties.ContentType ?? InternedString(ceContentType) ?? ContentTypes.Json,
            Headers = headers ?? NoHeaders,
            Body = body,
            DeliveryAttempt = attempt,
        };
    }

    /// <summary>The headers of a delivery sorted into CloudEvents attributes, Herald's own headers and the rest, as delivered.</summary>
    private struct DeliveredHeaders
    {
        public Dictionary<string, string>? Headers;
        public object? Id, Type, Source, Time, Schema, ContentType, Correlation, Causation, User, Partition, Attempt, DeliveryCount;
        public bool IsCloudEvent;

        public void Add(string name, object? value)
        {
            if (name.StartsWith(Prefix, StringComparison.Ordinal))
            {
                var attribute = name.AsSpan(Prefix.Length);
                switch (attribute)
                {
                    case "specversion": IsCloudEvent = true; break;
                    case "id": IsCloudEvent = true; Id = value; break;
                    case "type": IsCloudEvent = true; Type = value; break;
                    case "source": Source = value; break;
                    case "time": Time = value; break;
                    case "dataschema": Schema = value; break;
                    case "datacontenttype": ContentType = value; break;
                    case "correlationid": Correlation = value; break;
                    case "causationid": Causation = value; break;
                    case "userid": User = value; break;
                    case "partitionkey": Partition = value; break;
                    case "deliveryattempt": break;
                    default:
                        if (AsString(value) is { } text)
                        {
                            (Headers ??= new Dictionary<string, string>(StringComparer.Ordinal))[attribute.ToString()] = text;
                        }

                        break;
                }
            }
            else if (name.StartsWith("x-", StringComparison.Ordinal))
            {
                if (name == AttemptHeader)
                {
                    Attempt = value;
                }
                else if (name == DeliveryCountHeader)
                {
                    DeliveryCount = value ?? 0;
                }
            }
            else if (AsString(value) is { } text)
            {
                (Headers ??= new Dictionary<string, string>(StringComparer.Ordinal)).TryAdd(name, text);
            }
        }
    }

    /// <summary>What can be read of a malformed message, each part on its own, so one bad attribute hides no other.</summary>
    private static Envelope BestEffort(IReadOnlyBasicProperties properties, ReadOnlyMemory<byte> body, bool redelivered, string? rawType, TimeProvider timeProvider)
    {
        var now = timeProvider.GetUtcNow();
        var headers = new Dictionary<string, string>(StringComparer.Ordinal);
        string? id = null, type = null;
        try
        {
            foreach (var (name, value) in properties.Headers ?? EmptyAmqpHeaders)
            {
                var text = AsString(value);
                if (text is null || name.StartsWith("x-", StringComparison.Ordinal))
                {
                    continue;
                }

                if (!name.StartsWith(Prefix, StringComparison.Ordinal))
                {
                    headers.TryAdd(name, text);
                    continue;
                }

                var attribute = name[Prefix.Length..];
                switch (attribute)
                {
                    case "id": id = text; break;
                    case "type": type = text; break;
                    default:
                        if (!ReservedAttributes.Contains(attribute))
                        {
                            headers[attribute] = text;
                        }

                        break;
                }
            }
        }
#pragma warning disable CA1031 // The headers are what broke it: the envelope goes without the rest of them.
        catch (Exception)
#pragma warning restore CA1031
        {
        }

        return new Envelope
        {
            MessageId = Salvage.Read(() => CloudEventValues.ForeignMessageId(id ?? properties.MessageId, timeProvider), Guid.CreateVersion7(now)),
            MessageType = type ?? properties.Type ?? rawType ?? string.Empty,
            Time = Salvage.Read(() => AmqpTime(properties), null) ?? now,
            CorrelationId = properties.CorrelationId,
            ContentType = properties.ContentType ?? ContentTypes.Json,
            Headers = headers,
            Body = body,
            DeliveryAttempt = Salvage.Read(() => Attempt(properties, redelivered), 1),
        };
    }

    /// <summary>
    /// Deliveries so far including this one: Herald's own count of redeliveries it published, plus the broker's count of
    /// returns of this copy (quorum <c>x-delivery-count</c>, else 1 when the redelivered flag is set).
    /// </summary>
    public static int Attempt(IReadOnlyBasicProperties properties, bool redelivered)
    {
        var headers = properties.Headers;
        var before = headers is not null && headers.TryGetValue(AttemptHeader, out var a) ? a : null;
        var returns = headers is not null && headers.TryGetValue(DeliveryCountHeader, out var d) ? d ?? 0 : null;
        return Attempt(before, returns, redelivered);
    }

    /// <summary>
    /// How many times a quorum queue delivered this copy before without it being settled, or null when the broker keeps no
    /// count (a classic queue): the larger of <c>x-delivery-count</c> and <c>x-acquired-count</c>. Before RabbitMQ 4.3 the
    /// first counts every return; from 4.3 on it counts only returns the broker takes for failures (a reject, a lost
    /// consumer), and the second counts every return.
    /// </summary>
    public static int? UnsettledDeliveries(IReadOnlyBasicProperties properties)
    {
        if (properties.Headers is not { } headers)
        {
            return null;
        }

        int? count = null;
        if (headers.TryGetValue(DeliveryCountHeader, out var delivered) && delivered is not null)
        {
            count = AsInt(delivered);
        }

        if (headers.TryGetValue(AcquiredCountHeader, out var acquired) && acquired is not null)
        {
            count = Math.Max(count ?? 0, AsInt(acquired));
        }

        return count;
    }

    /// <summary>Which delivery a dead-letter queue's copy failed on: the attempt count written when it was dead-lettered.</summary>
    public static int DeadLetteredAttempt(IReadOnlyBasicProperties properties) =>
        properties.Headers is { } headers && headers.TryGetValue(AttemptHeader, out var attempts) ? Math.Max(1, AsInt(attempts)) : 1;

    private static int Attempt(object? attemptHeader, object? deliveryCount, bool redelivered)
    {
        var before = attemptHeader is null ? 0 : AsInt(attemptHeader);
        var returns = deliveryCount is not null ? AsInt(deliveryCount) : (redelivered ? 1 : 0);
        // Saturated: foreign counts near int.MaxValue must not wrap to a negative attempt (issue 10, found by the decode fuzz test).
        return (int)Math.Min(int.MaxValue, Math.Max(0L, before) + 1 + Math.Max(0L, returns));
    }

    /// <summary>The text of a header value: UTF-8 bytes decoded into the buffer when they fit, else a string.</summary>
    private static bool Chars(object? value, Span<char> buffer, out ReadOnlySpan<char> chars)
    {
        if (value is byte[] bytes && Encoding.UTF8.GetMaxCharCount(bytes.Length) <= buffer.Length)
        {
            chars = buffer[..Encoding.UTF8.GetChars(bytes, buffer)];
            return true;
        }

        if (AsString(value) is { } text)
        {
            chars = text;
            return true;
        }

        chars = default;
        return false;
    }

    /// <summary>A header value that repeats from message to message (type, source, content type) as a shared string.</summary>
    private static string? InternedString(object? value) => value is byte[] bytes ? Utf8Intern.Get(bytes) : AsString(value);

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
        if (value > MaxUnixMilliseconds)
        {
            throw new MalformedMessageException($"Malformed message: its AMQP timestamp {value} lies beyond the year 9999, in seconds and in milliseconds.");
        }

        return value > 100_000_000_000L ? DateTimeOffset.FromUnixTimeMilliseconds(value) : DateTimeOffset.FromUnixTimeSeconds(value);
    }

    private static void AddIfSet(Dictionary<string, object?> headers, string key, string? value)
    {
        if (value is not null)
        {
            headers[key] = value;
        }
    }

    private sealed record TimeText(long Millisecond, byte[] Utf8);
}
