using System.Buffers.Binary;
using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using Herald.Internal;
using Herald.Messages;
using Herald.Transport;

namespace Herald.Reliability.DeadLetters;

/// <summary>
/// The one mapping between the pipeline's failure bookkeeping and message headers: the first-failure time a redelivery
/// carries, and the dead-letter record a message carries into a transport's own dead letters (the fallback while the
/// store is unreachable) and back out of them (the drain).
/// </summary>
internal static class DeadLetterHeaders
{
    private const string TimeFormat = "O";

    // A retry from the dead letters: a new (version 7) id per retry, as a dead letter of the retried message is a new
    // failure, whose id must differ from the one the retry deletes once sent, and sort by when it was retried.
    private const string Retry = "herald-dead-letter-retry";

    // Where the stored event of a dead letter of a projection or a subscription is in the log, for a retry that applies it again.
    private const string SourceStream = "herald-dead-letter-stream";
    private const string SourcePosition = "herald-dead-letter-position";

    // The subscription that met it (a projection's names its generation: "orders", "orders#g2").
    private const string SourceSubscription = "herald-dead-letter-subscription";

    // What the fallback adds to a native dead letter; the drain takes them off again, so the stored envelope is the delivered one.
    private static readonly string[] RecordHeaders =
    [
        HeaderNames.DeadLetterReason, HeaderNames.DeadLetterId, HeaderNames.DeadLetterCause, HeaderNames.DeadLetterErrorType,
        HeaderNames.DeadLetterFingerprint, HeaderNames.DeadLetterAttempts, HeaderNames.DeadLetterTime,
    ];

    // What a retry from the dead letters takes off: it starts over, as a new message would (its due time goes as the send's
    // delay, its topic as where it is published).
    private static readonly string[] FailureHeaders =
        [.. RecordHeaders, HeaderNames.FirstFailure, HeaderNames.DeliverAt, HeaderNames.DeadLetterTopic, HeaderNames.DeadLetterOrigin, SourceStream, SourcePosition, SourceSubscription];

    /// <summary>When the message first failed, as its header says (never later than <paramref name="now"/>); null when it has not failed before.</summary>
    public static DateTimeOffset? FirstFailure(Envelope envelope, DateTimeOffset now) =>
        ParseTime(envelope.GetHeader(HeaderNames.FirstFailure)) is { } first ? (first < now ? first : now) : null;

    /// <summary>The headers a redelivery carries so its dead letter, on any node, knows the first failure.</summary>
    public static IReadOnlyDictionary<string, string> ForRedelivery(DateTimeOffset firstFailure) =>
        new Dictionary<string, string>(1, StringComparer.Ordinal) { [HeaderNames.FirstFailure] = FormatTime(firstFailure) };

    /// <summary>The headers that carry a dead-letter record in a transport's own dead letters.</summary>
    public static IReadOnlyDictionary<string, string> For(DeadLetter deadLetter) => new Dictionary<string, string>(8, StringComparer.Ordinal)
    {
        [HeaderNames.DeadLetterReason] = deadLetter.ErrorMessage,
        [HeaderNames.DeadLetterId] = deadLetter.Id.ToString("D"),
        [HeaderNames.DeadLetterCause] = deadLetter.Cause.ToString(),
        [HeaderNames.DeadLetterErrorType] = deadLetter.ErrorType,
        [HeaderNames.DeadLetterFingerprint] = deadLetter.Fingerprint,
        [HeaderNames.DeadLetterAttempts] = deadLetter.AttemptCount.ToString(CultureInfo.InvariantCulture),
        [HeaderNames.DeadLetterTime] = FormatTime(deadLetter.LastFailureTime),
        [HeaderNames.FirstFailure] = FormatTime(deadLetter.FirstFailureTime),
    };

    /// <summary>
    /// The dead-letter record of a native dead letter: the one the fallback wrote into its headers, or, for one that came
    /// there otherwise, a record made of what the transport kept (cause <see cref="DeadLetterCause.TransportDeadLettered"/>,
    /// or <see cref="DeadLetterCause.Undecodable"/> when it cannot be decoded).
    /// </summary>
    public static DeadLetter ToDeadLetter(NativeDeadLetter native, DateTimeOffset now)
    {
        var envelope = native.Envelope;
        var time = ParseTime(envelope.GetHeader(HeaderNames.DeadLetterTime)) ?? native.Time ?? now;
        var recorded = Enum.TryParse<DeadLetterCause>(envelope.GetHeader(HeaderNames.DeadLetterCause), ignoreCase: false, out var c) && Enum.IsDefined(c);
        var cause = recorded ? c : native.DecodeFailure is not null ? DeadLetterCause.Undecodable : DeadLetterCause.TransportDeadLettered;
        var message = envelope.GetHeader(HeaderNames.DeadLetterReason) ?? native.Reason ?? native.DecodeFailure?.Message ?? "Dead-lettered by the transport, without a reason.";
        var errorType = envelope.GetHeader(HeaderNames.DeadLetterErrorType)
            ?? (native.DecodeFailure is { } failure && !recorded ? failure.GetType().FullName : null)
            ?? typeof(HeraldException).FullName!;
        return new DeadLetter
        {
            Id = Guid.TryParse(envelope.GetHeader(HeaderNames.DeadLetterId), out var id) && id != Guid.Empty ? id : NativeDeadLetterId(native, ParseTime(envelope.GetHeader(HeaderNames.DeadLetterTime)) ?? native.Time, now),
            Envelope = envelope.WithoutHeaders(RecordHeaders),
            Endpoint = native.Queue,
            Cause = cause,
            ErrorType = errorType,
            ErrorMessage = message,
            Fingerprint = envelope.GetHeader(HeaderNames.DeadLetterFingerprint)
                ?? (native.DecodeFailure is { } decodeFailure ? ExceptionFingerprint.Compute(decodeFailure) : ExceptionFingerprint.Compute(errorType, [])),
            FirstFailureTime = FirstFailure(envelope, time) ?? time,
            LastFailureTime = time,
            AttemptCount = int.TryParse(envelope.GetHeader(HeaderNames.DeadLetterAttempts), NumberStyles.None, CultureInfo.InvariantCulture, out var attempts)
                ? attempts
                : Math.Max(1, envelope.DeliveryAttempt),
        };
    }

    /// <summary>
    /// The envelope a dead letter keeps of a message that was to be delivered at <paramref name="deliverAt"/>: while that
    /// is still ahead, with it in a header, so a retry does not deliver it early (a saga timeout, a scheduled message).
    /// </summary>
    public static Envelope WithDeliverAt(Envelope envelope, DateTimeOffset? deliverAt, DateTimeOffset now) =>
        deliverAt is { } at && at > now ? envelope.WithHeader(HeaderNames.DeliverAt, FormatTime(at)) : envelope;

    /// <summary>How long a retry from the dead letters must still delay the message to keep its due time; null when it is due.</summary>
    public static TimeSpan? RemainingDelay(Envelope envelope, DateTimeOffset now) =>
        ParseTime(envelope.GetHeader(HeaderNames.DeliverAt)) is { } at && at > now ? at - now : null;

    /// <summary>
    /// The envelope a dead letter keeps of a message that was to be published to <paramref name="topic"/> (null: sent to a
    /// queue): with the topic in a header, so a retry publishes it to the subscribers instead of sending it to a queue of that name.
    /// </summary>
    public static Envelope WithTopic(Envelope envelope, string? topic) =>
        topic is null ? envelope : envelope.WithHeader(HeaderNames.DeadLetterTopic, topic);

    /// <summary>The topic a retry from the dead letters publishes the message to; null when it is sent to the dead letter's endpoint.</summary>
    public static string? Topic(Envelope envelope) => envelope.GetHeader(HeaderNames.DeadLetterTopic) is { Length: > 0 } topic ? topic : null;

    /// <summary>
    /// The envelope a dead letter keeps of a message a consumer of <paramref name="origin"/> gave up on: for any but an
    /// endpoint, with the origin in a header, and the stream and position of the stored event and the subscription that met
    /// it when known, so a retry takes it back to that consumer instead of sending it to a queue of the consumer's name.
    /// </summary>
    public static Envelope WithOrigin(Envelope envelope, DeadLetterOrigin origin, string? stream, long? position, string? subscription = null)
    {
        if (origin == DeadLetterOrigin.Endpoint)
        {
            return envelope;
        }

        var headers = new Dictionary<string, string>(4, StringComparer.Ordinal) { [HeaderNames.DeadLetterOrigin] = origin.ToString() };
        if (subscription is not null)
        {
            headers[SourceSubscription] = subscription;
        }

        if (stream is not null)
        {
            headers[SourceStream] = stream;
        }

        if (position is { } at)
        {
            headers[SourcePosition] = at.ToString(CultureInfo.InvariantCulture);
        }

        return envelope.WithHeaders(headers);
    }

    /// <summary>
    /// The origin a dead letter's envelope names (<see cref="DeadLetterOrigin.Endpoint"/> when none); false when its header
    /// names one this version does not know.
    /// </summary>
    public static bool TryGetOrigin(Envelope envelope, out DeadLetterOrigin origin)
    {
        origin = DeadLetterOrigin.Endpoint;
        return envelope.GetHeader(HeaderNames.DeadLetterOrigin) is not { } name
            || (Enum.TryParse(name, ignoreCase: false, out origin) && string.Equals(origin.ToString(), name, StringComparison.Ordinal));
    }

    /// <summary>The stream and global position of the stored event a dead letter's envelope names, as far as it names them.</summary>
    public static (string? Stream, long? Position) Source(Envelope envelope) =>
        (envelope.GetHeader(SourceStream),
         long.TryParse(envelope.GetHeader(SourcePosition), NumberStyles.None, CultureInfo.InvariantCulture, out var position) ? position : null);

    /// <summary>The subscription whose chain gave up on the stored event (a projection's checkpoint id), or null when not named.</summary>
    public static string? Subscription(Envelope envelope) => envelope.GetHeader(SourceSubscription);

    /// <summary>
    /// The id of the dead letter the pipeline makes of a delivery: derived from the endpoint, the message and the retry from
    /// the dead letters it came in (none the first time), so the redelivery of one whose ack was lost after the store took
    /// it (a crash, a dropped connection) gets the same id, and the store keeps it once. Time-ordered by the message's time,
    /// or the retry's. A new id only for a message without one (undecodable).
    /// </summary>
    public static Guid PipelineDeadLetterId(string endpoint, Envelope envelope, DateTimeOffset now)
    {
        if (envelope.MessageId == Guid.Empty)
        {
            return Guid.CreateVersion7(now);
        }

        var retry = envelope.GetHeader(Retry);
        var time = Guid.TryParse(retry, out var retryId) && Version7Time(retryId) is { } retried ? retried : envelope.Time;

        // The id first (fixed length), the endpoint with its length: no two different inputs give the same name.
        var name = string.Create(
            CultureInfo.InvariantCulture,
            $"pipeline-dead-letter/{envelope.MessageId:D}/{endpoint.Length}:{endpoint}/{retry}");
        return HashedVersion7(Encoding.UTF8.GetBytes(name), time);
    }

    /// <summary>
    /// The id of the dead letter the pipeline makes of a delivery that did not decode: derived from the endpoint, the id it
    /// claims, its type, its body and the retry from the dead letters it came in, so the redelivery of one whose ack was lost
    /// after the store took it gets the same id (two broken messages that claim one id differ by their bodies), time-ordered
    /// by that id. Only for a version 7 id (as Herald's are, so a Herald message with a broken header or body): any other
    /// id of a broken message may be one the transport made up or derived from what broke, and two broken copies of a row
    /// would be one record, so it gets a new id (its time may be what broke it).
    /// </summary>
    public static Guid UndecodableDeadLetterId(string endpoint, Envelope envelope, DateTimeOffset now)
    {
        var id = envelope.MessageId;
        if (Version7Time(id) is not { } time)
        {
            return Guid.CreateVersion7(now);
        }

        var retry = envelope.GetHeader(Retry);
        var type = envelope.MessageType ?? string.Empty;

        // The id first (fixed length), then each part with its length: no two different inputs give the same name.
        var head = Encoding.UTF8.GetBytes(string.Create(
            CultureInfo.InvariantCulture,
            $"undecodable-dead-letter/{id:D}/{endpoint.Length}:{endpoint}/{type.Length}:{type}/{retry?.Length ?? -1}:{retry}/"));
        var name = new byte[head.Length + envelope.Body.Length];
        head.CopyTo(name, 0);
        envelope.Body.Span.CopyTo(name.AsSpan(head.Length));
        return HashedVersion7(name, time);
    }

    // The time a version 7 id was made at (its first 48 bits), or null for another version, or one past the year 9999 (48
    // bits of milliseconds reach the year 10889: a claimed id from the wire may say so).
    private static DateTimeOffset? Version7Time(Guid id)
    {
        Span<byte> bytes = stackalloc byte[16];
        if (id.Version != 7 || !id.TryWriteBytes(bytes, bigEndian: true, out _))
        {
            return null;
        }

        var milliseconds = (long)(BinaryPrimitives.ReadUInt64BigEndian(bytes) >> 16);
        return milliseconds <= MaxUnixMilliseconds ? DateTimeOffset.FromUnixTimeMilliseconds(milliseconds) : null;
    }

    private static readonly long MaxUnixMilliseconds = DateTimeOffset.MaxValue.ToUnixTimeMilliseconds();

    // Derived from the native identity, so a dead letter read again (the drain stopped after the store took it) keeps its id
    // and the store's add of it changes nothing; time-ordered as the store's other ids are (version 7, the rest hashed)
    // when the transport knows when it was dead-lettered. A new id only when the transport has no identity for it.
    private static Guid NativeDeadLetterId(NativeDeadLetter native, DateTimeOffset? time, DateTimeOffset now)
    {
        if (native.NativeId is not { } nativeId)
        {
            return Guid.CreateVersion7(now);
        }

        var name = Encoding.UTF8.GetBytes("native-dead-letter/" + nativeId);
        return time is { } deadLettered ? HashedVersion7(name, deadLettered) : CloudEventValues.DerivedMessageId(name);
    }

    // A version 7 id of the time, the rest of it hashed from the name.
    private static Guid HashedVersion7(byte[] name, DateTimeOffset time)
    {
        Span<byte> bytes = stackalloc byte[32];
        SHA256.HashData(name, bytes);
        BinaryPrimitives.WriteInt64BigEndian(bytes, Math.Max(0, time.ToUnixTimeMilliseconds()) << 16 | BinaryPrimitives.ReadUInt16BigEndian(bytes[6..]));
        bytes[6] = (byte)((bytes[6] & 0x0F) | 0x70);
        bytes[8] = (byte)((bytes[8] & 0x3F) | 0x80);
        return new Guid(bytes[..16], bigEndian: true);
    }

    /// <summary>
    /// The envelope a retry from the dead letters sends at <paramref name="now"/>: without the failure bookkeeping of its
    /// earlier life, and with an id of this retry, so failing again makes a dead letter of a new id.
    /// </summary>
    public static Envelope ForRetry(Envelope envelope, DateTimeOffset now) =>
        Original(envelope).WithHeader(Retry, Guid.CreateVersion7(now).ToString("D"));

    /// <summary>The envelope of a dead letter as its source had it: without the failure bookkeeping the dead letter added.</summary>
    public static Envelope Original(Envelope envelope) => envelope.WithoutHeaders(FailureHeaders);

    private static string FormatTime(DateTimeOffset time) => time.ToUniversalTime().ToString(TimeFormat, CultureInfo.InvariantCulture);

    private static DateTimeOffset? ParseTime(string? text) =>
        text is not null && DateTimeOffset.TryParse(text, CultureInfo.InvariantCulture, DateTimeStyles.RoundtripKind, out var time) ? time : null;
}
