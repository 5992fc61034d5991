namespace Herald.Sagas;

/// <summary>
/// A timeout a state-machine saga instance scheduled: a message delivered to the saga after a delay, unless it is
/// cancelled or rescheduled first. Only the timeout the instance still holds fires: a delivery whose id the instance no
/// longer holds (cancelled, rescheduled, or the instance finished) is ignored.
/// </summary>
/// <param name="Name">Its name within the instance (one timeout per name: scheduling a name again replaces it).</param>
/// <param name="Id">The id its delivery carries; a rescheduled timeout gets a new one.</param>
/// <param name="DueAt">When it fires.</param>
/// <param name="MessageType">The message type it delivers (the registered name).</param>
/// <param name="Body">The message, serialized, so it can be rescheduled from outside the saga.</param>
public sealed record SagaTimeout(string Name, Guid Id, DateTimeOffset DueAt, string MessageType, ReadOnlyMemory<byte> Body)
{
    /// <summary>
    /// When the saga sweep sent this timeout again because it was still held well past its due time (without an outbox,
    /// its message may have been lost); null when it never did. The sweep sends a timeout again only once: if it is still
    /// held after that, its delivery failed (see the dead letters), and the sweep logs that instead of sending it again.
    /// </summary>
    public DateTimeOffset? ResentAt { get; init; }
}
