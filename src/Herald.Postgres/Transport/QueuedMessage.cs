using Herald.Messages;

namespace Herald.Postgres.Transport;

/// <summary>A message a consumer claimed: its row id (the key for settling it), its queue and the envelope, with the delivery attempt set.</summary>
internal sealed record QueuedMessage(long Id, string Queue, Envelope Envelope);

/// <summary>What a claim returned: the messages, and when the next delayed message of the queue becomes visible (if any).</summary>
internal sealed record ClaimResult(IReadOnlyList<QueuedMessage> Messages, DateTimeOffset? NextVisibleAt);

/// <summary>A message the queue dead-lettered: the envelope as last delivered, where from, why and when.</summary>
internal sealed record PostgresQueueDeadLetter(Envelope Envelope, string Queue, string Reason, DateTimeOffset Time);
