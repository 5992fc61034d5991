using Herald.Messages;

namespace Herald.Benchmarks.Sagas;

// The three events every contender's saga handles, the same records on both sides: each transport serializes them to
// JSON and its consumer deserializes the body back into the record. Public, as MassTransit's serializer needs.

/// <summary>Creates the order's saga instance.</summary>
[MessageType("bench.order-submitted")]
public sealed record OrderSubmitted(Guid OrderId, string Customer, decimal Total);

/// <summary>Moves the instance from awaiting payment to awaiting shipment.</summary>
[MessageType("bench.payment-accepted")]
public sealed record PaymentAccepted(Guid OrderId, decimal Amount, string PaymentReference);

/// <summary>Ends the instance in its final state.</summary>
[MessageType("bench.order-shipped")]
public sealed record OrderShipped(Guid OrderId, string TrackingNumber);
