using System.Collections.Frozen;
using System.Globalization;
using System.Text;
using Herald.Internal;
using Herald.Messages;
using Herald.Transport;
using NATS.Client.Core;

namespace Herald.Nats.Transport;

/// <summary>
/// Maps an <see cref="Envelope"/> onto a NATS message in CloudEvents binary mode (docs/cloudevents.md): the body is the
/// data, the attributes are headers prefixed <c>ce-</c>, the content type is <c>Content-Type</c>. Header values outside
/// printable ASCII (and '%') are percent-encoded, as the CloudEvents HTTP binding does, because NATS headers are ASCII
/// lines. Reads both that shape and plain JSON (raw queues).
/// </summary>
internal static class NatsEnvelopeCodec
{
    public const string Prefix = "ce-";
    public const string ContentTypeHeader = "Content-Type";
    public const string MessageIdHeader = "Nats-Msg-Id";

    /// <summary>When a delayed send is due (RFC 3339); a consumer that gets it earlier hands it back until then.</summary>
    public const string NotBeforeHeader = "Herald-Not-Before";

    /// <summary>
    /// The furthest ahead a <see cref="NotBeforeHeader"/> Herald wrote can be: the longest delay it sends, and clock skew
    /// between nodes. One further ahead was written behind Herald's back and makes the message malformed.
    /// </summary>
    public static readonly TimeSpan FurthestDue = NatsTransport.MaxDelay + TimeSpan.FromMinutes(5);

    /// <summary>On a dead-letter copy: the delivery that failed.</summary>
    public const string AttemptHeader = "Herald-Attempt";

    /// <summary>
    /// On a message put back in its queue's stream by a stop that held it on its last delivery: the attempts made before
    /// the copy, added to the server's count of the copy's deliveries so the retry policy and <c>MaxDeliver</c> see them.
    /// </summary>
    public const string AttemptsBeforeHeader = "Herald-Attempts-Before";

    /// <summary>
    /// On a mapped queue's message a stop put back in the queue's delay stream: the subject it had in the queue's stream,
    /// which marks it as one the queue's consumer takes from the delay stream itself (laned by that subject).
    /// </summary>
    public const string PutBackSubjectHeader = "Herald-Put-Back-Subject";

    private static readonly FrozenSet<string> ReservedAttributes = CloudEventValues.EnvelopeAttributes.ToFrozenSet(StringComparer.OrdinalIgnoreCase);

    private static readonly IReadOnlyDictionary<string, string> NoHeaders = FrozenDictionary<string, string>.Empty;

    public static NatsHeaders Encode(Envelope envelope, string defaultSource, DateTimeOffset? notBefore = null, string? messageId = null)
    {
        // Sized for every header at once (the client adds Nats-Msg-Id), so the dictionary is not grown twice per message.
        var headers = new NatsHeaders(Capacity(envelope, notBefore))
        {
            [Prefix + "specversion"] = "1.0",
            [Prefix + "id"] = messageId ?? envelope.MessageId.ToString("D"),
            [Prefix + "type"] = Escape(envelope.MessageType),
            [Prefix + "time"] = CloudEventValues.FormatTime(envelope.Time),
            [ContentTypeHeader] = Escape(envelope.ContentType),
        };
        var source = defaultSource;

        // Most messages carry no headers of their own: no enumerator (an allocation through the interface) for them.
        if (envelope.Headers.Count > 0)
        {
            foreach (var (name, value) in envelope.Headers)
            {
                if (name == HeaderNames.Source)
                {
                    source = value;
                }
                else if (!ReservedAttributes.Contains(name))
                {
                    headers[Prefix + name] = Escape(value);
                }
            }
        }

        headers[Prefix + "source"] = Escape(source);
        if (envelope.SchemaVersion != 1)
        {
            // Version 1 is what a message without a dataschema reads as: the most common case costs no header.
            headers[Prefix + "dataschema"] = Escape(CloudEventValues.DataSchema(envelope.MessageType, envelope.SchemaVersion));
        }

        AddIfSet(headers, "partitionkey", envelope.PartitionKey);
        AddIfSet(headers, "correlationid", envelope.CorrelationId);
        AddIfSet(headers, "causationid", envelope.CausationId);
        AddIfSet(headers, "userid", envelope.UserId);
        if (notBefore is { } due)
        {
            headers[NotBeforeHeader] = CloudEventValues.FormatTime(due);
        }

        return headers;
    }

    private static int Capacity(Envelope envelope, DateTimeOffset? notBefore) =>
        7 + envelope.Headers.Count + (envelope.SchemaVersion != 1 ? 1 : 0) + (notBefore is null ? 0 : 1)
        + (envelope.PartitionKey is null ? 0 : 1) + (envelope.CorrelationId is null ? 0 : 1) + (envelope.CausationId is null ? 0 : 1) + (envelope.UserId is null ? 0 : 1);

    /// <summary>A copy of a delivered message's headers for its dead-letter copy, with the reason, the attempt and the added headers.</summary>
    public static NatsHeaders ForDeadLetter(NatsHeaders? delivered, int attempt, string reason, string queue, IReadOnlyDictionary<string, string>? added)
    {
        var headers = new NatsHeaders();
        if (delivered is not null)
        {
            foreach (var (name, value) in delivered)
            {
                // The dead-letter stream must keep every copy: the original's dedup id would drop a second one.
                if (!name.Equals(MessageIdHeader, StringComparison.OrdinalIgnoreCase))
                {
                    headers[name] = value;
                }
            }
        }

        if (added is not null)
        {
            foreach (var (name, value) in added)
            {
                headers[Prefix + name] = Escape(value);
            }
        }

        headers[Prefix + HeaderNames.DeadLetterReason] = Escape(reason);
        headers[AttemptHeader] = attempt.ToString(CultureInfo.InvariantCulture);
        headers["Herald-Origin-Queue"] = Escape(queue);
        return headers;
    }

    /// <summary>When a delayed message is due, or null when it was sent without a delay (or the header is unreadable).</summary>
    public static DateTimeOffset? NotBefore(NatsHeaders? headers) =>
        LastValue(headers, NotBeforeHeader) is { } text && CloudEventValues.TryParseTime(text, out var due) ? due : null;

    /// <summary>The subject a mapped queue's message had before a stop put it back in the queue's delay stream (<see cref="PutBackSubjectHeader"/>); null for any other.</summary>
    public static string? PutBackSubject(NatsHeaders? headers) => LastValue(headers, PutBackSubjectHeader);

    /// <summary>The attempts made before a message was put back in its queue's stream (<see cref="AttemptsBeforeHeader"/>); 0 for any other.</summary>
    public static int AttemptsBefore(NatsHeaders? headers) =>
        LastValue(headers, AttemptsBeforeHeader) is { } text && int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out var before) ? before : 0;

    /// <summary>Which delivery a dead-letter copy failed on: the attempt written when it was dead-lettered.</summary>
    public static int DeadLetteredAttempt(NatsHeaders? headers) =>
        LastValue(headers, AttemptHeader) is { } text && int.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out var attempt)
            ? Math.Max(1, attempt)
            : 1;

    /// <summary>
    /// The last value of a header, or null when it is absent or has no value. <see cref="NatsHeaders.TryGetLastValue"/>
    /// throws on a header present with no value at all (issue 10, found by the decode fuzz test), so it is not used here.
    /// </summary>
    internal static string? LastValue(NatsHeaders? headers, string name) =>
        headers is not null && headers.TryGetValue(name, out var values) && values.Count > 0 ? values[values.Count - 1] : null;

    /// <summary>
    /// Turns a delivered message into an envelope; never throws. When it is malformed, or decoding throws for any reason,
    /// <paramref name="failure"/> says why and the envelope holds what could be read: the raw body, the id and type where
    /// they are readable (so its dead letter shows as much as possible).
    /// </summary>
    public static Envelope Decode(
        NatsHeaders? headers, ReadOnlyMemory<byte> body, int attempt, DateTimeOffset stored, string? rawType, string defaultSource, TimeProvider timeProvider,
        out MalformedMessageException? failure) =>
        Decode(headers, body, attempt, stored, rawType, defaultSource, timeProvider, out failure, out _);

    /// <summary>
    /// As the other overload, and also reads <see cref="NotBeforeHeader"/> (as <see cref="NotBefore"/> does) in the same pass
    /// over the headers, so a consumer does not look it up on its own for every message.
    /// </summary>
    public static Envelope Decode(
        NatsHeaders? headers, ReadOnlyMemory<byte> body, int attempt, DateTimeOffset stored, string? rawType, string defaultSource, TimeProvider timeProvider,
        out MalformedMessageException? failure, out DateTimeOffset? notBefore)
    {
        string? due = null;
        try
        {
            failure = null;
            var envelope = DecodeOrThrow(headers, body, attempt, stored, rawType, defaultSource, timeProvider, ref due);
            notBefore = due is not null && CloudEventValues.TryParseTime(due, out var parsed) ? parsed : null;
            if (IsBeyondReach(notBefore, timeProvider))
            {
                // Not waited for (centuries, or more than a nak delay can hold): dead-lettered now, with the reason.
                failure = new MalformedMessageException(string.Create(
                    CultureInfo.InvariantCulture,
                    $"Malformed message {envelope.MessageId}: its {NotBeforeHeader} '{CloudEventValues.Excerpt(due!)}' is further ahead than any delay Herald sends ({NatsTransport.MaxDelay.TotalDays:0} days)."));
                notBefore = null;
            }

            return envelope;
        }
#pragma warning disable CA1031 // Nothing from the wire is trusted: whatever decoding throws makes the delivery undecodable.
        catch (Exception e)
#pragma warning restore CA1031
        {
            failure = CloudEventValues.DecodeFailure(e);
        }

        notBefore = NotBeforeOrNull(headers);
        if (IsBeyondReach(notBefore, timeProvider))
        {
            notBefore = null;
        }

        return BestEffort(headers, body, attempt, stored, rawType, timeProvider);
    }

    /// <summary>Whether a due time lies further ahead than any Herald writes (<see cref="FurthestDue"/>); the clock is read only for a due time.</summary>
    public static bool IsBeyondReach(DateTimeOffset? due, TimeProvider timeProvider) =>
        due is { } at && at - timeProvider.GetUtcNow() > FurthestDue;

    // A malformed message may have broken the pass before it reached the header: read on its own, never throwing.
    private static DateTimeOffset? NotBeforeOrNull(NatsHeaders? headers)
    {
        try
        {
            return NotBefore(headers);
        }
#pragma warning disable CA1031 // Unreadable: the message is taken as due now (it goes to the dead letters anyway).
        catch (Exception)
#pragma warning restore CA1031
        {
            return null;
        }
    }

    private static Envelope DecodeOrThrow(
        NatsHeaders? headers, ReadOnlyMemory<byte> body, int attempt, DateTimeOffset stored, string? rawType, string defaultSource, TimeProvider timeProvider,
        ref string? notBefore)
    {
        Dictionary<string, string>? custom = null;
        string? id = null, type = null, source = null, time = null, schema = null, contentType = null;
        string? correlation = null, causation = null, user = null, partition = null, messageId = null;
        var isCloudEvent = false;
        if (headers is { Count: > 0 })
        {
            foreach (var (name, values) in headers)
            {
                var value = values.Count > 0 ? values[values.Count - 1] : null;
                if (value is null)
                {
                    continue;
                }

                if (name.StartsWith(Prefix, StringComparison.OrdinalIgnoreCase))
                {
                    // Herald writes the attributes in lower case: matched as they are, without a lower-cased copy per header.
                    var attribute = name.AsSpan(Prefix.Length);
                    if (!Assign(attribute, value) && !(attribute.ContainsAnyInRange('A', 'Z') && Assign(attribute.ToString().ToLowerInvariant(), value)))
                    {
                        (custom ??= new Dictionary<string, string>(StringComparer.Ordinal))[attribute.ToString()] = Unescape(value);
                    }
                }
                else if (name.Equals(ContentTypeHeader, StringComparison.OrdinalIgnoreCase))
                {
                    // The common value shared, not one string per message.
                    contentType = value == ContentTypes.Json ? ContentTypes.Json : Unescape(value);
                }
                else if (name.Equals(MessageIdHeader, StringComparison.OrdinalIgnoreCase))
                {
                    messageId = value;
                }
                else if (name.Equals(NotBeforeHeader, StringComparison.OrdinalIgnoreCase))
                {
                    notBefore = value;
                }
                else if (!name.StartsWith("Nats-", StringComparison.OrdinalIgnoreCase) && !name.StartsWith("Herald-", StringComparison.OrdinalIgnoreCase))
                {
                    (custom ??= new Dictionary<string, string>(StringComparer.Ordinal)).TryAdd(name, value);
                }
            }
        }

        bool Assign(ReadOnlySpan<char> attribute, string value)
        {
            switch (attribute)
            {
                case "specversion": isCloudEvent = true; return true;
                case "id": isCloudEvent = true; id = Unescape(value); return true;
                case "type": isCloudEvent = true; type = Unescape(value); return true;
                case "source": source = Unescape(value); return true;
                case "time": time = Unescape(value); return true;
                case "dataschema": schema = Unescape(value); return true;
                case "datacontenttype": contentType ??= Unescape(value); return true;
                case "correlationid": correlation = Unescape(value); return true;
                case "causationid": causation = Unescape(value); return true;
                case "userid": user = Unescape(value); return true;
                case "partitionkey": partition = Unescape(value); return true;
                case "deliveryattempt": return true;
                default: return false;
            }
        }

        if (!isCloudEvent && rawType is not null)
        {
            return new Envelope
            {
                MessageId = CloudEventValues.ForeignMessageId(messageId, timeProvider),
                MessageType = rawType,
                Time = stored,
                ContentType = contentType ?? ContentTypes.Json,
                Headers = custom ?? NoHeaders,
                Body = body,
                DeliveryAttempt = attempt,
            };
        }

        id ??= messageId;
        if (id is null)
        {
            throw new MalformedMessageException("Malformed message: it has no id (no ce-id header and no Nats-Msg-Id).");
        }

        if (!Guid.TryParse(id, out var messageGuid))
        {
            throw new MalformedMessageException($"Malformed message: its id '{CloudEventValues.Excerpt(id)}' is not a Guid.");
        }

        if (string.IsNullOrEmpty(type))
        {
            throw new MalformedMessageException($"Malformed message {messageGuid}: it has no type (no ce-type header), and the queue is not a raw queue.");
        }

        if (time is null)
        {
            throw new MalformedMessageException($"Malformed message {messageGuid}: it has no time (no ce-time header).");
        }

        if (!CloudEventValues.TryParseTime(time, out var parsedTime))
        {
            throw new MalformedMessageException($"Malformed message {messageGuid}: its time '{CloudEventValues.Excerpt(time)}' is not an RFC 3339 time.");
        }

        if (source is not null && source != defaultSource)
        {
            (custom ??= new Dictionary<string, string>(StringComparer.Ordinal))[HeaderNames.Source] = source;
        }

        return new Envelope
        {
            MessageId = messageGuid,
            MessageType = type,
            SchemaVersion = schema is null ? 1 : CloudEventValues.SchemaVersion(schema),
            Time = parsedTime,
            CorrelationId = correlation,
            CausationId = causation,
            UserId = user,
            PartitionKey = partition,
            ContentType = contentType ?? ContentTypes.Json,
            Headers = custom ?? NoHeaders,
            Body = body,
            DeliveryAttempt = attempt,
        };
    }

    /// <summary>What can be read of a malformed message, each part on its own, so one bad header hides no other.</summary>
    private static Envelope BestEffort(NatsHeaders? headers, ReadOnlyMemory<byte> body, int attempt, DateTimeOffset stored, string? rawType, TimeProvider timeProvider)
    {
        string? id = null, type = null;
        var custom = new Dictionary<string, string>(StringComparer.Ordinal);
        try
        {
            if (headers is not null)
            {
                foreach (var (name, values) in headers)
                {
                    var value = values.Count > 0 ? values[values.Count - 1] : null;
                    if (value is null)
                    {
                        continue;
                    }

                    if (name.Equals(Prefix + "id", StringComparison.OrdinalIgnoreCase) || (id is null && name.Equals(MessageIdHeader, StringComparison.OrdinalIgnoreCase)))
                    {
                        id = Unescape(value);
                    }
                    else if (name.Equals(Prefix + "type", StringComparison.OrdinalIgnoreCase))
                    {
                        type = Unescape(value);
                    }
                    else if (name.StartsWith(Prefix, StringComparison.OrdinalIgnoreCase) && !ReservedAttributes.Contains(name[Prefix.Length..]))
                    {
                        custom[name[Prefix.Length..]] = Unescape(value);
                    }
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
            MessageId = CloudEventValues.ForeignMessageId(id, timeProvider),
            MessageType = type ?? rawType ?? string.Empty,
            Time = stored,
            ContentType = ContentTypes.Json,
            Headers = custom,
            Body = body,
            DeliveryAttempt = attempt,
        };
    }

    private static void AddIfSet(NatsHeaders headers, string attribute, string? value)
    {
        if (value is not null)
        {
            headers[Prefix + attribute] = Escape(value);
        }
    }

    /// <summary>Percent-encodes what a NATS header line cannot carry: anything outside printable ASCII, and '%' itself.</summary>
    internal static string Escape(string value)
    {
        var clean = true;
        foreach (var c in value)
        {
            if (c is < ' ' or > '~' or '%')
            {
                clean = false;
                break;
            }
        }

        if (clean)
        {
            return value;
        }

        var builder = new StringBuilder(value.Length + 16);
        Span<byte> utf8 = stackalloc byte[4];
        for (var i = 0; i < value.Length; i++)
        {
            var c = value[i];
            if (c is >= ' ' and <= '~' and not '%')
            {
                builder.Append(c);
                continue;
            }

            var length = char.IsSurrogatePair(value, i)
                ? Encoding.UTF8.GetBytes(value.AsSpan(i++, 2), utf8)
                : Encoding.UTF8.GetBytes(value.AsSpan(i, 1), utf8);
            foreach (var b in utf8[..length])
            {
                builder.Append('%').Append(b.ToString("X2", CultureInfo.InvariantCulture));
            }
        }

        return builder.ToString();
    }

    /// <summary>Undoes <see cref="Escape"/>; a value that is not valid percent-encoding is kept as it came.</summary>
    internal static string Unescape(string value)
    {
        if (!value.Contains('%', StringComparison.Ordinal))
        {
            return value;
        }

        try
        {
            return Uri.UnescapeDataString(value);
        }
#pragma warning disable CA1031 // A foreign value that only looks escaped is kept as it is.
        catch (Exception)
#pragma warning restore CA1031
        {
            return value;
        }
    }
}
