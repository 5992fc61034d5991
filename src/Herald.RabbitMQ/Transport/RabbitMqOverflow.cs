namespace Herald.RabbitMQ.Transport;

/// <summary>What a full dead-letter queue (<see cref="RabbitMqTransportOptions.DeadLetterQueueMaxLength"/>) does with one more message.</summary>
public enum RabbitMqOverflow
{
    /// <summary>
    /// <c>reject-publish</c>: the broker refuses the new dead letter, so Herald keeps the message in its queue and
    /// redelivers it after <see cref="RabbitMqTransportOptions.NetworkRecoveryInterval"/>: nothing is lost, the queue waits.
    /// </summary>
    RejectPublish,

    /// <summary><c>drop-head</c>: the oldest dead letter is discarded to make room; nothing waits, the oldest is lost.</summary>
    DropHead,
}
