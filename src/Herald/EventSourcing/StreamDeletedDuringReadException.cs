namespace Herald.EventSourcing;

/// <summary>
/// A stream read that spans several pages (each its own query) found the stream deleted after it had begun: the last event it
/// returned is no longer readable. The events returned so far are the deleted stream's, a prefix of it; the read stops rather
/// than end early as though the stream were shorter, or go on into the events of the stream started again after the deletion,
/// which would join two histories into one that never existed. Read the stream again (an aggregate's load is retried with its
/// message).
/// </summary>
public sealed class StreamDeletedDuringReadException : HeraldException
{
    /// <summary>Creates the exception naming the stream and the version of the last event the read returned.</summary>
    public StreamDeletedDuringReadException(string stream, long version)
        : base($"Stream '{stream}' was deleted while it was read: the event at version {version}, the last one the read returned, is no longer readable. The events read so far belong to the deleted stream; read it again.")
    {
        Stream = stream;
        Version = version;
    }

    /// <summary>The stream.</summary>
    public string Stream { get; }

    /// <summary>The version of the last event the read returned before it met the deletion.</summary>
    public long Version { get; }
}
