using Herald.Persistence;

namespace Herald.Streams;

/// <summary>
/// The durable state of stream processors: JSON values by processor, store name and key. Writes enlist in a unit of work,
/// the same one that moves the processor's source checkpoint (<see cref="EventSourcing.ICheckpointStore"/>), so when both
/// live in one database a restart resumes with exactly the state of the last committed position. The persistence package
/// registers it (<c>UseSqliteStreamState</c>, <c>UsePostgresStreamState</c>); the default keeps it in memory.
/// </summary>
public interface IStreamStateStore
{
    /// <summary>Every committed entry of <paramref name="processor"/>, in any order.</summary>
    IAsyncEnumerable<StateEntry> ReadAllAsync(string processor, CancellationToken cancellationToken = default);

    /// <summary>Enlists the changes (a null value deletes the key) in <paramref name="unitOfWork"/>: written when it commits, or not at all.</summary>
    ValueTask WriteAsync(string processor, IReadOnlyList<StateChange> changes, IUnitOfWork unitOfWork, CancellationToken cancellationToken = default);
}

/// <summary>One committed entry of a processor's state.</summary>
/// <param name="Store">The state store's name.</param>
/// <param name="Key">The entry's key.</param>
/// <param name="Value">The entry's JSON.</param>
public sealed record StateEntry(string Store, string Key, string Value);
