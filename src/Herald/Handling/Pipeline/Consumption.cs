using System.Diagnostics;
using Herald.Diagnostics;
using Herald.Messages;
using Herald.Transport;

namespace Herald.Handling.Pipeline;

/// <summary>
/// One delivery on its way through an endpoint's chain: what the steps learn about it (its type, its handlers, the decoded
/// message) for the steps after them. Reused across deliveries (see <see cref="EndpointPipeline"/>), so no step keeps it.
/// </summary>
internal sealed class Consumption
{
    public Delivery Delivery { get; private set; } = null!;

    /// <summary>The envelope as delivered, or as the upcast step migrated it.</summary>
    public Envelope Envelope { get; set; } = null!;

    public CancellationToken CancellationToken { get; private set; }

    /// <summary>The registered type of the envelope's message type, or null when the registry does not know it.</summary>
    public MessageTypeInfo? Type { get; set; }

    /// <summary>The message-type tag of metrics: a registered name only, so the wire cannot grow their cardinality (issue 10).</summary>
    public string TypeTag { get; set; } = null!;

    public Activity? Activity { get; set; }

    public HandlerInvoker? Invoker { get; set; }

    public object? Message { get; set; }

    /// <summary>
    /// True while a batch decodes the delivery ahead of its own run (<see cref="BatchedSubscriptionPipeline"/>): a poison
    /// found then is counted when the chain runs the event alone, not twice.
    /// </summary>
    public bool IsTrial { get; set; }

    public TagList Tags(string endpoint) => new()
    {
        { MetricNames.EndpointTag, endpoint },
        { MetricNames.MessageTypeTag, TypeTag },
    };

    public void Start(Delivery delivery, CancellationToken cancellationToken)
    {
        Delivery = delivery;
        Envelope = delivery.Envelope;
        CancellationToken = cancellationToken;
    }

    /// <summary>Forgets the delivery, so a pooled instance holds nothing alive.</summary>
    public void Clear()
    {
        Delivery = null!;
        Envelope = null!;
        CancellationToken = default;
        Type = null;
        TypeTag = null!;
        Activity = null;
        Invoker = null;
        Message = null;
        IsTrial = false;
    }
}
