namespace Herald.Nats.Transport;

/// <summary>
/// Maps a Herald queue onto a stream declared in <see cref="NatsTransportOptions.Streams"/>: the queue is a durable pull
/// consumer of that stream, filtered to <see cref="FilterSubject"/>, and sends to the queue publish to <see cref="SendSubject"/>.
/// </summary>
public sealed class NatsQueueOptions
{
    /// <summary>The stream the queue reads, one of <see cref="NatsTransportOptions.Streams"/> (or one an operator made).</summary>
    public string Stream { get; set; } = string.Empty;

    /// <summary>The subjects of the stream this queue takes, wildcards allowed, such as <c>events.orders.*</c>.</summary>
    public string FilterSubject { get; set; } = string.Empty;

    /// <summary>The subject a send to this queue publishes to; null: <see cref="FilterSubject"/>, which must then have no wildcard.</summary>
    public string? SendSubject { get; set; }

    /// <summary>Where the durable consumer starts when it is first created (later starts resume where it left off).</summary>
    public NatsStartPosition StartFrom { get; set; } = NatsStartPosition.All;

    /// <summary>
    /// Whether messages of one subject are handled one at a time in stream order (when they carry no partition key, which
    /// wins), for streams whose subjects name an entity, such as <c>events.order-42</c>. On by default.
    /// </summary>
    public bool OrderBySubject { get; set; } = true;

    internal string Subject => SendSubject ?? FilterSubject;

    internal NatsQueueOptions Copy() => (NatsQueueOptions)MemberwiseClone();
}
