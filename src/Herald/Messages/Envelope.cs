namespace Herald.Messages;

/// <summary>
/// The one message model of Herald: what a transport carries, what the event store records, what the
/// outbox holds and what a dead letter keeps. It maps 1:1 onto CloudEvents 1.0 (see docs/cloudevents.md).
/// </summary>
public sealed record Envelope
{
    // Stands in _correlationId for "this message's own id", so a new flow pays for the text only if it is read.
    private static readonly string Self = new('\0', 1);

    // Every message allocates an envelope, so it holds inline only what most messages carry: the time as UTC ticks, and
    // the rarer attributes (user, partition key, a content type other than JSON, a time offset other than UTC) in one
    // shared, immutable Rare object that exists only when one of them is set.
    private readonly Guid _messageId;
    private readonly string? _correlationId;
    private readonly long _utcTicks;
    private readonly Rare? _rare;

    /// <summary>Unique id of this message (a Guid v7, so ids sort by creation time).</summary>
    public required Guid MessageId
    {
        get => _messageId;
        init
        {
            // A copy with another id keeps the flow it belonged to: the id it correlated to is written down first.
            if (ReferenceEquals(_correlationId, Self) && _messageId != Guid.Empty)
            {
                _correlationId = _messageId.ToString();
            }

            _messageId = value;
        }
    }

    /// <summary>Stable logical type name from the <see cref="MessageTypeRegistry"/>; never a CLR type name.</summary>
    public required string MessageType { get; init; }

    /// <summary>Schema version of the body, used by upcasters; starts at 1.</summary>
    public int SchemaVersion { get; init; } = 1;

    /// <summary>When the message was created.</summary>
    public required DateTimeOffset Time
    {
        get => _rare is { OffsetMinutes: not 0 and var minutes }
            ? new DateTimeOffset(_utcTicks + (minutes * TimeSpan.TicksPerMinute), TimeSpan.FromMinutes(minutes))
            : new DateTimeOffset(_utcTicks, TimeSpan.Zero);
        init
        {
            _utcTicks = value.UtcTicks;
            var minutes = (short)(value.Offset.Ticks / TimeSpan.TicksPerMinute);
            if (minutes != (_rare?.OffsetMinutes ?? 0))
            {
                _rare = Rare.Of((_rare ?? Rare.None) with { OffsetMinutes = minutes });
            }
        }
    }

    /// <summary>Id shared by every message of one business flow; carried over from the message being handled.</summary>
    public string? CorrelationId
    {
        get => ReferenceEquals(_correlationId, Self) ? _messageId.ToString() : _correlationId;
        init => _correlationId = value;
    }

    /// <summary>
    /// True when the message starts its flow: <see cref="CorrelationId"/> is its own id, written as text only when read
    /// (most in-process messages never read it, so they do not pay for the string).
    /// </summary>
    internal bool CorrelatesToSelf
    {
        get => ReferenceEquals(_correlationId, Self);
        init
        {
            if (value)
            {
                _correlationId = Self;
            }
            else if (ReferenceEquals(_correlationId, Self))
            {
                _correlationId = null;
            }
        }
    }

    /// <summary>Id of the message that caused this one (the incoming message id when sent from a handler).</summary>
    public string? CausationId { get; init; }

    /// <summary>The user on whose behalf the message was sent, if any.</summary>
    public string? UserId
    {
        get => _rare?.UserId;
        init
        {
            if (!ReferenceEquals(value, _rare?.UserId))
            {
                _rare = Rare.Of((_rare ?? Rare.None) with { UserId = value });
            }
        }
    }

    /// <summary>Key that orders messages: transports that preserve order do so per partition key.</summary>
    public string? PartitionKey
    {
        get => _rare?.PartitionKey;
        init
        {
            if (!ReferenceEquals(value, _rare?.PartitionKey))
            {
                _rare = Rare.Of((_rare ?? Rare.None) with { PartitionKey = value });
            }
        }
    }

    /// <summary>Media type of <see cref="Body"/>, by default <c>application/json</c>.</summary>
    public string ContentType
    {
        // Null in Rare is the default (JSON); a null set on purpose (an adapter's salvage of a broken message) is kept as one.
        get => _rare?.ContentType is { } contentType ? (ReferenceEquals(contentType, NullContentType) ? null! : contentType) : ContentTypes.Json;
        init
        {
            var stored = value is null ? NullContentType : string.Equals(value, ContentTypes.Json, StringComparison.Ordinal) ? null : value;
            if (!ReferenceEquals(stored, _rare?.ContentType))
            {
                _rare = Rare.Of((_rare ?? Rare.None) with { ContentType = stored });
            }
        }
    }

    /// <summary>Free-form headers (trace context among them). Names are case-sensitive.</summary>
    public IReadOnlyDictionary<string, string> Headers { get; init; } = EmptyHeaders.Instance;

    /// <summary>The serialized message.</summary>
    public ReadOnlyMemory<byte> Body { get; init; }

    /// <summary>Which delivery of the message this is: 1 for the first (also what a new envelope carries), more on redeliveries.</summary>
    public int DeliveryAttempt { get; init; }

    /// <summary>Equal when every property is (the correlation id by its value, however it is held).</summary>
    public bool Equals(Envelope? other) =>
        ReferenceEquals(this, other)
        || (other is not null
            && _messageId == other._messageId
            && string.Equals(MessageType, other.MessageType, StringComparison.Ordinal)
            && SchemaVersion == other.SchemaVersion
            && Time.Equals(other.Time)
            && string.Equals(CorrelationId, other.CorrelationId, StringComparison.Ordinal)
            && string.Equals(CausationId, other.CausationId, StringComparison.Ordinal)
            && string.Equals(UserId, other.UserId, StringComparison.Ordinal)
            && string.Equals(PartitionKey, other.PartitionKey, StringComparison.Ordinal)
            && string.Equals(ContentType, other.ContentType, StringComparison.Ordinal)
            && EqualityComparer<IReadOnlyDictionary<string, string>>.Default.Equals(Headers, other.Headers)
            && Body.Equals(other.Body)
            && DeliveryAttempt == other.DeliveryAttempt);

    /// <inheritdoc />
    public override int GetHashCode() => HashCode.Combine(_messageId, MessageType, SchemaVersion, Time, DeliveryAttempt);

    /// <summary>Returns the header value or null.</summary>
    public string? GetHeader(string name) => Headers.TryGetValue(name, out var value) ? value : null;

    /// <summary>Returns a copy with one header added or replaced.</summary>
    public Envelope WithHeader(string name, string value)
    {
        ArgumentException.ThrowIfNullOrEmpty(name);
        ArgumentNullException.ThrowIfNull(value);
        var headers = new Dictionary<string, string>(Headers.Count + 1, StringComparer.Ordinal);
        foreach (var pair in Headers)
        {
            headers[pair.Key] = pair.Value;
        }

        headers[name] = value;
        return this with { Headers = headers };
    }

    /// <summary>Returns a copy with each of <paramref name="added"/> added or replaced (itself when there are none).</summary>
    internal Envelope WithHeaders(IReadOnlyDictionary<string, string> added)
    {
        if (added.Count == 0)
        {
            return this;
        }

        var headers = new Dictionary<string, string>(Headers.Count + added.Count, StringComparer.Ordinal);
        foreach (var pair in Headers)
        {
            headers[pair.Key] = pair.Value;
        }

        foreach (var pair in added)
        {
            headers[pair.Key] = pair.Value;
        }

        return this with { Headers = headers };
    }

    /// <summary>Returns a copy without the named headers (itself when it has none of them).</summary>
    internal Envelope WithoutHeaders(IEnumerable<string> names)
    {
        Dictionary<string, string>? headers = null;
        foreach (var name in names)
        {
            if (Headers.ContainsKey(name))
            {
                headers ??= new Dictionary<string, string>(Headers, StringComparer.Ordinal);
                headers.Remove(name);
            }
        }

        return headers is null ? this : this with { Headers = headers };
    }

    // Stands in Rare.ContentType for a content type set to null, so it reads back as null rather than as the JSON default.
    private static readonly string NullContentType = new('\0', 1);

    // Immutable, so copies made with `with` share it; a setter makes a new one.
    private sealed record Rare(string? UserId, string? PartitionKey, string? ContentType, short OffsetMinutes)
    {
        public static readonly Rare None = new(null, null, null, 0);

        public static Rare? Of(Rare rare) =>
            rare is { UserId: null, PartitionKey: null, ContentType: null, OffsetMinutes: 0 } ? null : rare;
    }
}
