using Herald.Messages;

namespace Herald.Transport.InMemory;

/// <summary>
/// A message of a queue with its position: the order in which the queue took it, over all its consumers. A hand-back keeps the
/// position, so what several consumers hand back is read again in that order.
/// </summary>
internal readonly record struct QueuedEnvelope(Envelope Envelope, long Position);
