using Herald.Internal;

namespace Herald.Nats.Transport;

/// <summary>Settings of the NATS JetStream transport, validated when the transport is created (or at host start).</summary>
public sealed class NatsTransportOptions
{
    /// <summary>The server to connect to, such as <c>nats://127.0.0.1:4222</c> (credentials, if any, in the URL).</summary>
    public string Url { get; set; } = "nats://127.0.0.1:4222";

    /// <summary>The name this process's connection shows in the server's monitoring.</summary>
    public string ClientName { get; set; } = "herald";

    /// <summary>
    /// The first token of the subjects Herald makes for queues and topics it was not told about: queue <c>q</c> is
    /// <c>{prefix}.q.q</c>, topic <c>t</c> is <c>{prefix}.t.t</c>, dead letters of <c>q</c> are <c>{prefix}.dead-letter.q</c>.
    /// </summary>
    public string SubjectPrefix { get; set; } = "herald";

    /// <summary>The start of the names of the streams Herald makes for such queues and topics (<c>{prefix}_Q_q</c>, <c>{prefix}_T_t</c>).</summary>
    public string StreamPrefix { get; set; } = "HERALD";

    /// <summary>
    /// The limits of the stream Herald makes for a queue that is not in <see cref="Queues"/> (its name and subject are
    /// set by Herald). By default a work queue on disk: a message is removed once acked.
    /// </summary>
    public NatsStreamOptions QueueStream { get; set; } = new() { Retention = NatsRetention.WorkQueue };

    /// <summary>
    /// The limits of the stream Herald makes for a topic that is not in <see cref="Topics"/> (its name and subject are set
    /// by Herald). Its retention must be <see cref="NatsRetention.Limits"/>: each message is kept until a limit removes it,
    /// so a queue's stream that sources the topic copies every message published after its binding even when the server
    /// sets the source up late. By default on disk, each message kept an hour.
    /// </summary>
    public NatsStreamOptions TopicStream { get; set; } = new() { Retention = NatsRetention.Limits, MaxAge = TimeSpan.FromHours(1) };

    /// <summary>
    /// Streams declared (created, or updated to these settings) when the transport starts, such as a stream <c>EVENTS</c>
    /// on <c>events.*</c> with limits; queues read them through <see cref="Queues"/>, topics publish to them through <see cref="Topics"/>.
    /// </summary>
    public IList<NatsStreamOptions> Streams { get; private set; } = [];

    /// <summary>Queues that read a declared stream instead of a stream of their own, keyed by queue name.</summary>
    public IDictionary<string, NatsQueueOptions> Queues { get; private set; } = new Dictionary<string, NatsQueueOptions>(StringComparer.Ordinal);

    /// <summary>
    /// Topics that publish to a subject of a declared stream instead of a stream of their own, keyed by topic name:
    /// <c>Topics["order-placed"] = "events.order-placed"</c>. A queue in <see cref="Queues"/> whose filter takes that
    /// subject then gets the topic's messages.
    /// </summary>
    public IDictionary<string, string> Topics { get; private set; } = new Dictionary<string, string>(StringComparer.Ordinal);

    /// <summary>
    /// Queues that also take plain JSON messages from other clients (no CloudEvents headers), keyed by queue name, with the
    /// Herald message type to give them: <c>RawQueues["orders-in"] = "order-placed"</c>.
    /// </summary>
    public IDictionary<string, string> RawQueues { get; private set; } = new Dictionary<string, string>(StringComparer.Ordinal);

    /// <summary>How long the server waits for an ack before it delivers a message again; Herald sends progress while a handler runs longer.</summary>
    public TimeSpan AckWait { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>
    /// How often a delivery still unsettled tells the server it is in progress (<c>+WPI</c>), at most half of
    /// <see cref="AckWait"/>; null: a third of it (and never more than a third of the durable consumer's own ack wait).
    /// </summary>
    public TimeSpan? KeepAliveInterval { get; set; }

    /// <summary>
    /// Most deliveries of one message; on the last, a failure sends it to the dead letters instead of back to the stream.
    /// Null (the default): no limit of the server's, Herald's retry policy alone decides.
    /// </summary>
    public int? MaxDeliver { get; set; }

    /// <summary>When set, replaces <c>ConsumerOptions.Prefetch</c> for every consumer (raised to the consumer's concurrency if lower).</summary>
    public int? Prefetch { get; set; }

    /// <summary>
    /// Largest body accepted, in bytes; larger messages are refused before sending. 1 MiB less 16 KiB for the headers:
    /// the server's default <c>max_payload</c> of 1 MiB counts headers and body together.
    /// </summary>
    public int MaxMessageBytes { get; set; } = (1024 * 1024) - (16 * 1024);

    /// <summary>Whether a send carries the message id as <c>Nats-Msg-Id</c>, so the stream drops a second send of it within its duplicate window.</summary>
    public bool Deduplicate { get; set; } = true;

    /// <summary>
    /// How long a send keeps trying while the server gives no answer, or answers that nothing took the message: during a
    /// reconnect, or while a restarted server brings JetStream back. With <see cref="Deduplicate"/> a send tried again is
    /// stored once; without it, it may be stored twice. Zero: one try.
    /// </summary>
    public TimeSpan PublishRetryTimeout { get; set; } = TimeSpan.FromSeconds(10);

    /// <summary>How often the consumer lag gauge reads the consumer's pending and ack-pending counts from the server.</summary>
    public TimeSpan LagRefreshInterval { get; set; } = TimeSpan.FromSeconds(10);

    /// <summary>The CloudEvents <c>source</c> written when a message carries no <c>herald-source</c> header.</summary>
    public string Source { get; set; } = "/herald";

    /// <summary>Returns what is wrong with the settings; empty when they are usable.</summary>
    public IReadOnlyList<string> Validate() => OptionsProblems.Of(this, static (options, problems) => options.Check(problems)).Messages;

    internal void Check(OptionsProblems problems)
    {
        if (!Uri.TryCreate(Url, UriKind.Absolute, out var uri) || (uri.Scheme != "nats" && uri.Scheme != "tls" && uri.Scheme != "ws" && uri.Scheme != "wss"))
        {
            problems.Add(nameof(Url), $"must be an absolute nats:// (or tls://, ws://, wss://) URL, not '{UserInfo.Redact(Url)}'.");
        }

        if (string.IsNullOrWhiteSpace(ClientName))
        {
            problems.Add(nameof(ClientName), "must not be empty.");
        }

        if (!NatsNames.IsToken(SubjectPrefix))
        {
            problems.Add(nameof(SubjectPrefix), $"must be one subject token (no '.', '*', '>' or spaces), not '{SubjectPrefix}'.");
        }

        if (!NatsNames.IsStreamName(StreamPrefix))
        {
            problems.Add(nameof(StreamPrefix), $"must be a valid stream name (letters, digits, '-' and '_'), not '{StreamPrefix}'.");
        }

        if (QueueStream is null)
        {
            problems.Add(nameof(QueueStream), "must be set.");
        }
        else
        {
            CheckLimits(problems, nameof(QueueStream), QueueStream);
        }

        if (TopicStream is null)
        {
            problems.Add(nameof(TopicStream), "must be set.");
        }
        else
        {
            CheckLimits(problems, nameof(TopicStream), TopicStream);
            if (TopicStream.Retention != NatsRetention.Limits)
            {
                problems.Add(nameof(TopicStream) + ".Retention", $"must be Limits, not {TopicStream.Retention}: bound queues copy a topic's messages through consumers the server sets up after the binding (and again after a restart), which interest retention does not wait for and a work queue allows only one of.");
            }
        }

        var streams = new HashSet<string>(StringComparer.Ordinal);
        for (var i = 0; i < Streams.Count; i++)
        {
            var stream = Streams[i];
            var setting = $"{nameof(Streams)}[{i}]";
            if (stream is null)
            {
                problems.Add(setting, "must not be null.");
                continue;
            }

            if (!NatsNames.IsStreamName(stream.Name))
            {
                problems.Add(setting + ".Name", $"must be a valid stream name (letters, digits, '-' and '_'), not '{stream.Name}'.");
            }
            else if (!streams.Add(stream.Name))
            {
                problems.Add(setting + ".Name", $"'{stream.Name}' is declared twice.");
            }

            if (stream.Subjects.Count == 0 || stream.Subjects.Any(s => !NatsNames.IsSubject(s, wildcards: true)))
            {
                problems.Add(setting + ".Subjects", $"must list at least one valid subject, not [{string.Join(", ", stream.Subjects)}].");
            }

            CheckLimits(problems, setting, stream);
        }

        foreach (var (queue, mapping) in Queues)
        {
            var setting = $"{nameof(Queues)}[\"{queue}\"]";
            if (mapping is null || string.IsNullOrWhiteSpace(mapping.Stream) || !NatsNames.IsSubject(mapping.FilterSubject, wildcards: true))
            {
                problems.Add(setting, "needs a Stream and a valid FilterSubject.");
                continue;
            }

            if (!NatsNames.IsSubject(mapping.Subject, wildcards: false))
            {
                problems.Add(setting + ".SendSubject", $"must be a subject without wildcards (needed when FilterSubject '{mapping.FilterSubject}' has one).");
            }

            if (mapping.StartFrom is null)
            {
                problems.Add(setting + ".StartFrom", "must be set.");
            }
        }

        foreach (var (topic, subject) in Topics)
        {
            if (!NatsNames.IsSubject(subject, wildcards: false))
            {
                problems.Add($"{nameof(Topics)}[\"{topic}\"]", $"must be a subject without wildcards, not '{subject}'.");
            }
        }

        foreach (var (queue, type) in RawQueues)
        {
            if (string.IsNullOrWhiteSpace(queue) || string.IsNullOrWhiteSpace(type))
            {
                problems.Add(nameof(RawQueues), $"entry '{queue}' = '{type}' needs a queue name and a message type.");
            }
        }

        problems.Between(nameof(AckWait), AckWait, TimeSpan.FromSeconds(1), TimeSpan.FromDays(1), "1 second to 1 day");
        if (KeepAliveInterval is { } keepAlive)
        {
            // At most half the ack wait: a tick that comes a little late must still come before the server gives the message up.
            problems.Between(nameof(KeepAliveInterval), keepAlive, TimeSpan.FromMilliseconds(100), AckWait / 2, "100 ms to half of AckWait");
        }

        if (MaxDeliver is { } maxDeliver)
        {
            problems.AtLeast(nameof(MaxDeliver), maxDeliver, 1);
        }

        if (Prefetch is { } prefetch)
        {
            problems.Between(nameof(Prefetch), prefetch, 1, 100_000);
        }

        problems.AtLeast(nameof(MaxMessageBytes), MaxMessageBytes, 1);
        problems.Between(nameof(PublishRetryTimeout), PublishRetryTimeout, TimeSpan.Zero, TimeSpan.FromHours(1), "0 to 1 hour");
        problems.Positive(nameof(LagRefreshInterval), LagRefreshInterval);
        problems.AtMostLongestWait(nameof(LagRefreshInterval), LagRefreshInterval);
        if (string.IsNullOrWhiteSpace(Source))
        {
            problems.Add(nameof(Source), "must not be empty.");
        }
    }

    internal TimeSpan KeepAliveEvery => KeepAliveInterval ?? AckWait / 3;

    /// <summary>
    /// The keep-alive interval for a durable consumer whose ack wait is <paramref name="consumerAckWait"/> (set by whichever
    /// process made it, maybe shorter than this one's <see cref="AckWait"/>): never more than a third of it, so two ticks may
    /// come late before the server gives up on a message.
    /// </summary>
    internal TimeSpan KeepAliveFor(TimeSpan consumerAckWait) =>
        consumerAckWait > TimeSpan.Zero && consumerAckWait / 3 < KeepAliveEvery ? consumerAckWait / 3 : KeepAliveEvery;

    /// <summary>A snapshot, so changing the options object later does not change a running transport.</summary>
    internal NatsTransportOptions Snapshot()
    {
        // Every setting at once; the collections, and the streams and mappings in them, copied apart.
        var copy = (NatsTransportOptions)MemberwiseClone();
        copy.QueueStream = QueueStream.Copy();
        copy.TopicStream = TopicStream.Copy();
        copy.Streams = [.. Streams.Select(static stream => stream.Copy())];
        copy.Queues = Queues.ToDictionary(static entry => entry.Key, static entry => entry.Value.Copy(), StringComparer.Ordinal);
        copy.Topics = new Dictionary<string, string>(Topics, StringComparer.Ordinal);
        copy.RawQueues = new Dictionary<string, string>(RawQueues, StringComparer.Ordinal);
        return copy;
    }

    private static void CheckLimits(OptionsProblems problems, string setting, NatsStreamOptions stream)
    {
        if (!Enum.IsDefined(stream.Retention) || !Enum.IsDefined(stream.Storage))
        {
            problems.Add(setting, $"has an unknown Retention ({stream.Retention}) or Storage ({stream.Storage}).");
        }

        if (stream.MaxMessages is < 1 || stream.MaxBytes is < 1 || stream.MaxAge is { } age && age <= TimeSpan.Zero || stream.DuplicateWindow is { } window && window <= TimeSpan.Zero)
        {
            problems.Add(setting, "limits (MaxMessages, MaxBytes, MaxAge, DuplicateWindow) must be positive when set.");
        }

        // The server keeps the duplicate window within the age when the window is not set, and refuses a stream whose window
        // is set longer than its age: say so at start rather than at the first send.
        if (stream is { MaxAge: { } maxAge, DuplicateWindow: { } duplicates } && maxAge > TimeSpan.Zero && duplicates > maxAge)
        {
            problems.Add(setting + ".DuplicateWindow", $"({duplicates}) must not be longer than MaxAge ({maxAge}): JetStream refuses such a stream. Leave it unset to have the server use the shorter of 2 minutes and MaxAge.");
        }

        problems.Between(setting + ".Replicas", stream.Replicas, 1, 5);
    }
}
