namespace Herald.EventSourcing;

/// <summary>The outcome of an append.</summary>
/// <param name="StreamVersion">The stream's version after the append (the version of its last event).</param>
/// <param name="LastPosition">The global position of the last event appended (or already present, for an idempotent retry).</param>
public sealed record AppendResult(long StreamVersion, long LastPosition);
