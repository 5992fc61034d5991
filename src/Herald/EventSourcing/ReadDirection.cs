namespace Herald.EventSourcing;

/// <summary>Which way a stream is read.</summary>
public enum ReadDirection
{
    /// <summary>Oldest first.</summary>
    Forward,

    /// <summary>Newest first.</summary>
    Backward,
}
