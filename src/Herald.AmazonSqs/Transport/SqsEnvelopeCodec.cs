using System.Buffers;
using System.Globalization;
using System.Text;
using System.Text.Json;
using Amazon.SQS.Model;
using Herald.Internal;
using Herald.Messages;
using Herald.Transport;

namespace Herald.AmazonSqs.Transport;

/// <summary>
/// Maps an <see cref="Envelope"/> onto an SQS message in CloudEvents binary mode (docs/sqs.md): the body is the data, the
/// attributes a plain client reads most are message attributes of their own (<c>ce_id</c>, <c>ce_type</c>, <c>ce_time</c>, ...),
/// and the rest travels in one JSON attribute, <c>herald</c>, because SQS allows ten attributes per message. A body SQS cannot
/// carry as text (not UTF-8, or characters SQS refuses) goes base64-encoded, marked in that attribute. Reads that shape and
/// plain JSON from other clients (raw queues); never throws on what it reads.
/// </summary>
internal static class SqsEnvelopeCodec
{
    public const string SpecVersion = "ce_specversion";
    public const string Id = "ce_id";
    public const string Type = "ce_type";
    public const string Source = "ce_source";
    public const string Time = "ce_time";
    public const string PartitionKey = "ce_partitionkey";
    public const string CorrelationId = "ce_correlationid";
    public const string ContentType = "content-type";
    public const string Extra = "herald";

    /// <summary>The SQS system attribute that counts receives of this copy.</summary>
    public const string ReceiveCount = "ApproximateReceiveCount";

    /// <summary>The SQS system attribute holding when the message was sent (Unix milliseconds).</summary>
    public const string SentTimestamp = "SentTimestamp";


    private static readonly HashSet<string> Known = new(StringComparer.Ordinal) { SpecVersion, Id, Type, Source, Time, PartitionKey, CorrelationId, ContentType, Extra, "message-id" };

    private static readonly JsonWriterOptions WriterOptions = new() { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping };
    private static readonly UTF8Encoding StrictUtf8 = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);

    /// <summary>What Herald carries beside the envelope on a copy it sends itself (a redelivery, a chained delay, a dead letter).</summary>
    /// <param name="AttemptsBefore">Deliveries before this copy was sent; its receives count on top.</param>
    /// <param name="Due">When the copy may be handled: received earlier, it is held back again, not delivered.</param>
    /// <param name="DeadLetterReason">Why it was dead-lettered, on a copy in a dead-letter queue.</param>
    public readonly record struct Carried(int AttemptsBefore = 0, DateTimeOffset? Due = null, string? DeadLetterReason = null);

    /// <summary>The message body and attributes of <paramref name="envelope"/>.</summary>
    public static (string Body, Dictionary<string, MessageAttributeValue> Attributes) Encode(Envelope envelope, string defaultSource, Carried carried = default)
    {
        var attributes = new Dictionary<string, MessageAttributeValue>(9, StringComparer.Ordinal)
        {
            [SpecVersion] = Text("1.0"),
            [Id] = Text(envelope.MessageId.ToString("D")),
            [Time] = Text(CloudEventValues.FormatTime(envelope.Time)),
        };

        // Empty only on what was salvaged of an undecodable message (its dead-letter copy): SQS refuses an empty attribute.
        AddIfSet(attributes, Type, envelope.MessageType);
        AddIfSet(attributes, ContentType, envelope.ContentType);
        string? source = null;
        Dictionary<string, string>? headers = null;
        foreach (var (name, value) in envelope.Headers)
        {
            if (name == HeaderNames.Source)
            {
                source = value;
            }
            else
            {
                (headers ??= new Dictionary<string, string>(StringComparer.Ordinal))[name] = value;
            }
        }

        attributes[Source] = Text(source ?? defaultSource);
        AddIfSet(attributes, PartitionKey, envelope.PartitionKey);
        AddIfSet(attributes, CorrelationId, envelope.CorrelationId);

        var (body, base64) = Body(envelope.Body.Span);
        var extra = ExtraJson(envelope, headers, base64, carried);
        if (extra is not null)
        {
            attributes[Extra] = Text(extra);
        }

        return (body, attributes);
    }

    /// <summary>How many bytes SQS counts for the message against its size limit: the body and every attribute's name, type and value.</summary>
    public static int SizeOf(string body, Dictionary<string, MessageAttributeValue> attributes)
    {
        var size = Encoding.UTF8.GetByteCount(body);
        foreach (var (name, value) in attributes)
        {
            size += Encoding.UTF8.GetByteCount(name) + value.DataType.Length + Encoding.UTF8.GetByteCount(value.StringValue ?? "");
        }

        return size;
    }

    /// <summary>
    /// Turns a received message into an envelope, never throwing: when it is malformed, <paramref name="failure"/> says why
    /// and the envelope holds what could be read. <paramref name="rawType"/> is the type of plain messages on a raw queue.
    /// </summary>
    public static Envelope Decode(Message message, string? rawType, string defaultSource, DateTimeOffset now, out Carried carried, out MalformedMessageException? failure)
    {
        carried = default;
        try
        {
            failure = null;
            return DecodeOrThrow(message, rawType, defaultSource, now, out carried);
        }
#pragma warning disable CA1031 // Nothing from the wire is trusted: whatever decoding throws makes the message undecodable.
        catch (Exception e)
#pragma warning restore CA1031
        {
            failure = CloudEventValues.DecodeFailure(e);
        }

        // What Herald carried on its own copy is read on its own: a dead-letter copy of a message that could not be decoded
        // (no type, say) cannot be decoded either, and keeps its reason and attempts for the drain.
        carried = Internal.Salvage.Read(() => CarriedOf(message), default);
        var receives = ReceivesOf(message);
        return Internal.Salvage.Envelope(
            (int)Math.Min(int.MaxValue, (long)carried.AttemptsBefore + receives),
            now,
            () => ParseId(StringAttribute(message, Id), message.MessageId),
            () => StringAttribute(message, Type) ?? rawType ?? "",
            () => ParseTime(StringAttribute(message, Time) ?? throw new FormatException()),
            () => StringAttribute(message, PartitionKey),
            () => Encoding.UTF8.GetBytes(message.Body ?? ""));
    }

    /// <summary>How many times this copy was received, from <c>ApproximateReceiveCount</c> (1 when SQS did not say).</summary>
    public static int ReceivesOf(Message message) =>
        message.Attributes is { } system && system.TryGetValue(ReceiveCount, out var text)
            && int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out var count) && count > 0
            ? count
            : 1;

    private static Envelope DecodeOrThrow(Message message, string? rawType, string defaultSource, DateTimeOffset now, out Carried carried)
    {
        carried = default;
        var receives = ReceivesOf(message);
        var typeText = StringAttribute(message, Type);
        var body = message.Body ?? "";
        // Attributes other clients set beside Herald's own are kept as headers.
        Dictionary<string, string>? headers = null;
        foreach (var (name, value) in message.MessageAttributes ?? [])
        {
            if (!Known.Contains(name) && value.StringValue is { } text)
            {
                (headers ??= new Dictionary<string, string>(StringComparer.Ordinal))[name] = text;
            }
        }

        if (typeText is null && StringAttribute(message, SpecVersion) is null && rawType is not null)
        {
            // A plain message from another client: the body is the data, the id its own when it names one.
            return new Envelope
            {
                MessageId = ParseId(StringAttribute(message, Id) ?? StringAttribute(message, "message-id"), message.MessageId),
                MessageType = rawType,
                Time = SentTime(message) ?? now,
                CorrelationId = StringAttribute(message, CorrelationId),
                PartitionKey = StringAttribute(message, PartitionKey),
                ContentType = StringAttribute(message, ContentType) ?? ContentTypes.Json,
                Headers = headers ?? (IReadOnlyDictionary<string, string>)new Dictionary<string, string>(StringComparer.Ordinal),
                Body = Encoding.UTF8.GetBytes(body),
                DeliveryAttempt = receives,
            };
        }

        var idText = StringAttribute(message, Id)
            ?? throw new MalformedMessageException($"Malformed message: it has no {Id} attribute, and the queue is not a raw queue (SQS message id {message.MessageId}).");
        if (!Guid.TryParse(idText, out var id))
        {
            throw new MalformedMessageException($"Malformed message: its id '{CloudEventValues.Excerpt(idText)}' is not a Guid.");
        }

        if (string.IsNullOrEmpty(typeText))
        {
            throw new MalformedMessageException($"Malformed message {id}: it has no {Type} attribute, and the queue is not a raw queue.");
        }

        var timeText = StringAttribute(message, Time)
            ?? throw new MalformedMessageException($"Malformed message {id}: it has no {Time} attribute.");
        if (!TryParseTime(timeText, out var time))
        {
            throw new MalformedMessageException($"Malformed message {id}: its time '{CloudEventValues.Excerpt(timeText)}' is not an RFC 3339 time.");
        }

        var schemaVersion = 1;
        var base64 = false;
        string? causationId = null, userId = null;
        if (StringAttribute(message, Extra) is { } extra)
        {
            ReadExtra(id, extra, ref headers, ref causationId, ref userId, ref schemaVersion, ref base64, out carried);

            // Held back 15 minutes at a time, it would come back forever and never be delivered: a failure to dead-letter
            // instead (a day allowed for the sender's clock to be ahead).
            if (carried.Due is { } due && due - now > AmazonSqsTransport.MaxDelay + TimeSpan.FromDays(1))
            {
                throw new MalformedMessageException(
                    $"Malformed message {id}: its due time {CloudEventValues.FormatTime(due)} is more than {AmazonSqsTransport.MaxDelay.Days} days away, beyond the longest delay the SQS transport holds.");
            }
        }

        if (StringAttribute(message, Source) is { } source && source != defaultSource)
        {
            (headers ??= new Dictionary<string, string>(StringComparer.Ordinal))[HeaderNames.Source] = source;
        }

        byte[] bytes;
        if (base64)
        {
            try
            {
                bytes = body == "=" ? [] : Convert.FromBase64String(body);
            }
            catch (FormatException e)
            {
                throw new MalformedMessageException($"Malformed message {id}: its body is marked base64 but is not.", e);
            }
        }
        else
        {
            bytes = Encoding.UTF8.GetBytes(body);
        }

        return new Envelope
        {
            MessageId = id,
            MessageType = typeText,
            SchemaVersion = schemaVersion,
            Time = time,
            CorrelationId = StringAttribute(message, CorrelationId),
            CausationId = causationId,
            UserId = userId,
            PartitionKey = StringAttribute(message, PartitionKey),
            ContentType = StringAttribute(message, ContentType) ?? ContentTypes.Json,
            Headers = headers ?? (IReadOnlyDictionary<string, string>)new Dictionary<string, string>(StringComparer.Ordinal),
            Body = bytes,
            // Saturated: a foreign "attempts" near int.MaxValue must not wrap to a negative attempt (issue 10, found by the decode fuzz test).
            DeliveryAttempt = (int)Math.Min(int.MaxValue, (long)carried.AttemptsBefore + receives),
        };
    }

    /// <summary>What the <c>herald</c> attribute carries (default without one); throws when it is malformed.</summary>
    private static Carried CarriedOf(Message message)
    {
        if (StringAttribute(message, Extra) is not { } extra)
        {
            return default;
        }

        Dictionary<string, string>? headers = null;
        string? causationId = null, userId = null;
        var schemaVersion = 1;
        var base64 = false;
        ReadExtra(Guid.Empty, extra, ref headers, ref causationId, ref userId, ref schemaVersion, ref base64, out var carried);
        return carried;
    }

    private static void ReadExtra(
        Guid id,
        string extra,
        ref Dictionary<string, string>? headers,
        ref string? causationId,
        ref string? userId,
        ref int schemaVersion,
        ref bool base64,
        out Carried carried)
    {
        int attempts = 0;
        DateTimeOffset? due = null;
        string? reason = null;
        JsonDocument document;
        try
        {
            document = JsonDocument.Parse(extra);
        }
        catch (JsonException e)
        {
            throw new MalformedMessageException($"Malformed message {id}: its {Extra} attribute is not JSON.", e);
        }

        using (document)
        {
            if (document.RootElement.ValueKind != JsonValueKind.Object)
            {
                throw new MalformedMessageException($"Malformed message {id}: its {Extra} attribute is not a JSON object.");
            }

            foreach (var property in document.RootElement.EnumerateObject())
            {
                var value = property.Value;
                switch (property.Name)
                {
                    case "causationid": causationId = value.GetString(); break;
                    case "userid": userId = value.GetString(); break;
                    case "dataschema": schemaVersion = value.GetString() is { } schema ? CloudEventValues.SchemaVersion(schema) : 1; break;
                    case "body": base64 = value.GetString() == "base64"; break;
                    case "attempts": attempts = Math.Max(0, value.GetInt32()); break;
                    case "due":
                        if (!TryParseTime(value.GetString() ?? "", out var at))
                        {
                            throw new MalformedMessageException($"Malformed message {id}: its due time '{CloudEventValues.Excerpt(value.GetString() ?? "")}' is not a time.");
                        }

                        due = at;
                        break;
                    case "reason": reason = value.GetString(); break;
                    case "headers":
                        if (value.ValueKind != JsonValueKind.Object)
                        {
                            throw new MalformedMessageException($"Malformed message {id}: its headers are not a JSON object.");
                        }

                        foreach (var header in value.EnumerateObject())
                        {
                            (headers ??= new Dictionary<string, string>(StringComparer.Ordinal))[header.Name] = header.Value.ValueKind == JsonValueKind.String
                                ? header.Value.GetString()!
                                : throw new MalformedMessageException($"Malformed message {id}: its header '{CloudEventValues.Excerpt(header.Name)}' is not a string.");
                        }

                        break;
                    default:
                        break;
                }
            }
        }

        carried = new Carried(attempts, due, reason);
    }

    private static string? ExtraJson(Envelope envelope, Dictionary<string, string>? headers, bool base64, Carried carried)
    {
        if (envelope.CausationId is null && envelope.UserId is null && envelope.SchemaVersion == 1 && headers is null && !base64
            && carried.AttemptsBefore == 0 && carried.Due is null && carried.DeadLetterReason is null)
        {
            return null;
        }

        var buffer = new ArrayBufferWriter<byte>(256);
        using (var writer = new Utf8JsonWriter(buffer, WriterOptions))
        {
            writer.WriteStartObject();
            WriteIfSet(writer, "causationid", envelope.CausationId);
            WriteIfSet(writer, "userid", envelope.UserId);
            if (envelope.SchemaVersion != 1)
            {
                writer.WriteString("dataschema", CloudEventValues.DataSchema(envelope.MessageType, envelope.SchemaVersion));
            }

            if (base64)
            {
                writer.WriteString("body", "base64");
            }

            if (carried.AttemptsBefore > 0)
            {
                writer.WriteNumber("attempts", carried.AttemptsBefore);
            }

            if (carried.Due is { } due)
            {
                writer.WriteString("due", CloudEventValues.FormatTime(due));
            }

            WriteIfSet(writer, "reason", carried.DeadLetterReason);
            if (headers is not null)
            {
                writer.WriteStartObject("headers");
                foreach (var (name, value) in headers)
                {
                    writer.WriteString(name, value);
                }

                writer.WriteEndObject();
            }

            writer.WriteEndObject();
        }

        return Encoding.UTF8.GetString(buffer.WrittenSpan);
    }

    /// <summary>The body as SQS text: the UTF-8 text itself when SQS accepts every character of it, else base64.</summary>
    private static (string Body, bool Base64) Body(ReadOnlySpan<byte> bytes)
    {
        if (bytes.Length == 0)
        {
            // SQS refuses an empty body; base64 of nothing is empty too, so a marker stands for it.
            return ("=", true);
        }

        string text;
        try
        {
            text = StrictUtf8.GetString(bytes);
        }
        catch (DecoderFallbackException)
        {
            return (Convert.ToBase64String(bytes), true);
        }

        foreach (var rune in text.EnumerateRunes())
        {
            var c = rune.Value;
            if (!(c is 0x9 or 0xA or 0xD || (c >= 0x20 && c <= 0xD7FF) || (c >= 0xE000 && c <= 0xFFFD) || c >= 0x10000))
            {
                return (Convert.ToBase64String(bytes), true);
            }
        }

        return (text, false);
    }

    internal static string? StringAttribute(Message message, string name) =>
        message.MessageAttributes is { } attributes && attributes.TryGetValue(name, out var value) ? value.StringValue : null;

    internal static bool TryParseTime(string text, out DateTimeOffset time) => CloudEventValues.TryParseTime(text, out time);

    private static DateTimeOffset ParseTime(string text) =>
        TryParseTime(text, out var time) ? time : throw new FormatException($"'{CloudEventValues.Excerpt(text)}' is not a time.");

    private static DateTimeOffset? SentTime(Message message) =>
        message.Attributes is { } system && system.TryGetValue(SentTimestamp, out var text)
            && long.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out var ms) && ms > 0 && ms < 253_402_300_799_999L
            ? DateTimeOffset.FromUnixTimeMilliseconds(ms)
            : null;

    /// <summary>The id as a Guid; a foreign id that is not one becomes a stable Guid of its text (RFC 9562 version 8), so copies keep one id.</summary>
    private static Guid ParseId(string? id, string? fallback)
    {
        var text = id ?? fallback ?? throw new MalformedMessageException("Malformed message: it has no id.");
        if (Guid.TryParse(text, out var guid))
        {
            return guid;
        }

        return CloudEventValues.DerivedMessageId(Encoding.UTF8.GetBytes(text).AsSpan());
    }

    private static MessageAttributeValue Text(string value) => new() { DataType = "String", StringValue = value };

    private static void AddIfSet(Dictionary<string, MessageAttributeValue> attributes, string name, string? value)
    {
        // SQS refuses an empty string attribute: an empty value travels as no attribute (and reads back as null).
        if (!string.IsNullOrEmpty(value))
        {
            attributes[name] = Text(value);
        }
    }

    private static void WriteIfSet(Utf8JsonWriter writer, string name, string? value)
    {
        if (value is not null)
        {
            writer.WriteString(name, value);
        }
    }
}
