using Herald.Messages;
using Herald.Persistence;

namespace Herald.EventSourcing;

/// <summary>
/// The event store port: streams with optimistic concurrency and idempotent appends, and one gap-free global
/// log (<c>$all</c>). A reader of <c>$all</c> never sees a position before every lower position that will ever
/// commit is visible, so catch-up subscriptions neither skip nor repeat events.
/// </summary>
public interface IEventStore
{
    /// <summary>
    /// Appends events to a stream atomically. A conflict throws <see cref="ConcurrencyException"/> and writes
    /// nothing. Re-sending the same event ids at the same place succeeds without writing twice and returns the
    /// original result, in every expected-version mode; the same ids with other content (type or body bytes) or at
    /// another place in the same stream conflict. Event ids are checked per stream: the same ids appended to another stream
    /// are new events there. Invalid input throws an <see cref="ArgumentException"/> (see <see cref="AppendValidation"/>).
    /// An empty list checks the expected version and returns the stream's current state.
    /// </summary>
    ValueTask<AppendResult> AppendAsync(string stream, ExpectedVersion expectedVersion, IReadOnlyList<Envelope> events, CancellationToken cancellationToken = default);

    /// <summary>
    /// Appends events to a stream in <paramref name="unitOfWork"/>: they are written with its other writes when it commits, or
    /// not at all. The same rules as the direct append apply, but a conflict surfaces at <see cref="IUnitOfWork.CommitAsync"/>
    /// (a <see cref="ConcurrencyException"/>, with nothing written), never here. Invalid input still throws at once.
    /// Returns the stream version the events are stored at if it commits (a deleted stream's next version counts on from its
    /// deleted ones): always with an exact version or <see cref="ExpectedVersion.NoStream"/>, whose commit fails rather than
    /// store them elsewhere; null when only the commit can place them (<see cref="ExpectedVersion.Any"/> or
    /// <see cref="ExpectedVersion.StreamExists"/> on a store that writes at the commit) or when the append already conflicts.
    /// </summary>
    ValueTask<long?> AppendAsync(string stream, ExpectedVersion expectedVersion, IReadOnlyList<Envelope> events, IUnitOfWork unitOfWork, CancellationToken cancellationToken = default);

    /// <summary>
    /// Reads a stream forward from a version (inclusive) or backward from a version (inclusive; pass <see cref="long.MaxValue"/>
    /// to read backward from the end). A missing or deleted stream reads as empty. A store that reads a long stream in several
    /// queries throws <see cref="StreamDeletedDuringReadException"/> when the stream is deleted between two of them: a read
    /// never joins a deleted stream's events to those of the stream started again, nor ends early as though it were shorter.
    /// </summary>
    IAsyncEnumerable<RecordedEvent> ReadStreamAsync(string stream, ReadDirection direction = ReadDirection.Forward, long fromVersion = 1, int maxCount = int.MaxValue, CancellationToken cancellationToken = default);

    /// <summary>Reads the global log forward from a position (exclusive: pass a checkpoint, or 0 for the start), optionally filtered.</summary>
    IAsyncEnumerable<RecordedEvent> ReadAllAsync(long fromPositionExclusive = 0, EventFilter? filter = null, int maxCount = int.MaxValue, CancellationToken cancellationToken = default);

    /// <summary>
    /// The position of the last event a reader of <c>$all</c> can see now (0 when the log is empty). Every event at or below
    /// it that will ever be readable is readable now, so a filtered subscription may advance its checkpoint to it.
    /// </summary>
    ValueTask<long> GetLastPositionAsync(CancellationToken cancellationToken = default);

    /// <summary>The stream's current version, 0 when it does not exist or was deleted.</summary>
    ValueTask<long> GetStreamVersionAsync(string stream, CancellationToken cancellationToken = default);

    /// <summary>
    /// Soft-deletes a stream: its events disappear from stream and <c>$all</c> reads and its version reads as 0; an append with
    /// <see cref="ExpectedVersion.NoStream"/> or <see cref="ExpectedVersion.Any"/> starts it again after its last version.
    /// Deleting a missing stream with Any or NoStream does nothing.
    /// </summary>
    ValueTask DeleteStreamAsync(string stream, ExpectedVersion expectedVersion, CancellationToken cancellationToken = default);

    /// <summary>
    /// Completes when events after <paramref name="afterPosition"/> may be readable (a wake-up, never a timer poll;
    /// spurious wake-ups are allowed). Live subscriptions wait on this.
    /// </summary>
    ValueTask WaitForEventsAsync(long afterPosition, CancellationToken cancellationToken = default);
}
