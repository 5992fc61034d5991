namespace Herald.EventSourcing;

/// <summary>
/// Thrown when a stream name breaks <see cref="StreamName"/>'s rules (empty id, too long, whitespace, ...), often because of
/// an id a client sent; an <see cref="ArgumentException"/> for parameter <c>stream</c> (or <c>id</c>), which HTTP answers 400.
/// </summary>
public sealed class InvalidStreamNameException : ArgumentException
{
    internal InvalidStreamNameException(string reason, string paramName)
        : base(reason, paramName) => Reason = reason;

    /// <summary>The broken rule, without the parameter name <see cref="Exception.Message"/> appends.</summary>
    public string Reason { get; }
}
