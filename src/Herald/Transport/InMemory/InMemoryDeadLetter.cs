using Herald.Messages;

namespace Herald.Transport.InMemory;

/// <summary>A message the in-memory transport dead-lettered, with the reason it was given.</summary>
/// <param name="Envelope">The message as it was last delivered.</param>
/// <param name="Queue">The queue it was consumed from.</param>
/// <param name="Reason">Why it was dead-lettered.</param>
/// <param name="Time">When.</param>
public sealed record InMemoryDeadLetter(Envelope Envelope, string Queue, string Reason, DateTimeOffset Time);
