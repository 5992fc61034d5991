namespace Herald.Streams;

/// <summary>A stream-table join could not read its outside table: the run stops (and resumes from its last commit) rather than dead-lettering the event.</summary>
internal sealed class StreamLookupException(string message, Exception inner) : Exception(message, inner);
