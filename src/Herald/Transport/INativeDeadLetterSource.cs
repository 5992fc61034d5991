namespace Herald.Transport;

/// <summary>
/// Implemented by a transport that keeps dead letters of its own (a dead-letter queue or table) next to its
/// <see cref="ITransport"/>. Those are only the fallback while the dead-letter store is unreachable; Herald's drain reads
/// them back through this interface and moves each into the store, so every dead letter ends up where operators look.
/// </summary>
public interface INativeDeadLetterSource
{
    /// <summary>
    /// Hands the native dead letters of <paramref name="queue"/>, oldest first, to <paramref name="moveAsync"/> one at a
    /// time, and removes each only after <paramref name="moveAsync"/> returned. An exception from it leaves that dead letter
    /// in the transport (where it was, or at the end of a log that commits in order) and the drain goes on with the next (so one that keeps failing does not hold back the others), then
    /// throws the first such exception once the rest were handed on; a cancelled <paramref name="cancellationToken"/> stops
    /// it, leaving the rest. Returns how many were moved; none left (or none ever) is not an error.
    /// </summary>
    ValueTask<int> DrainDeadLettersAsync(string queue, Func<NativeDeadLetter, CancellationToken, ValueTask> moveAsync, CancellationToken cancellationToken = default);
}
