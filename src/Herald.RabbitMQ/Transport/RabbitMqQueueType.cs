namespace Herald.RabbitMQ.Transport;

/// <summary>The kind of queue Herald declares on RabbitMQ.</summary>
public enum RabbitMqQueueType
{
    /// <summary>Classic durable queues: one node, the broker default.</summary>
    Classic,

    /// <summary>Quorum queues: replicated, with a broker-side delivery count (<c>x-delivery-count</c>).</summary>
    Quorum,
}
