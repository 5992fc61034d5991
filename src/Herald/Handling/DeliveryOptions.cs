namespace Herald.Handling;

/// <summary>Per-message options of a send or publish through the <see cref="IMessageBus"/>.</summary>
public sealed record DeliveryOptions
{
    /// <summary>No options: a new correlation id is taken from the message id.</summary>
    public static DeliveryOptions Default { get; } = new();

    /// <summary>The business flow this message belongs to; defaults to the message id (a new flow).</summary>
    public string? CorrelationId { get; init; }

    /// <summary>The id of the message that caused this one.</summary>
    public string? CausationId { get; init; }

    /// <summary>The user on whose behalf the message is sent.</summary>
    public string? UserId { get; init; }

    /// <summary>The ordering key: transports that keep order do so per key.</summary>
    public string? PartitionKey { get; init; }

    /// <summary>Extra headers.</summary>
    public IReadOnlyDictionary<string, string>? Headers { get; init; }

    /// <summary>Deliver no earlier than this long from now.</summary>
    public TimeSpan? Delay { get; init; }

    /// <summary>
    /// The queue a send goes to, in place of the message type's route (<c>h.Route&lt;T&gt;</c>) or this endpoint's own queue:
    /// for a reply to a queue known only at run time. A publish goes to its type's topic, so one given a destination is
    /// refused with an <see cref="ArgumentException"/>, as is a blank one.
    /// </summary>
    public string? Destination { get; init; }
}
