using Herald.Persistence;

namespace Herald.EventSourcing;

/// <summary>Keeps the latest snapshot of each stream, so an aggregate loads from it plus the events after it.</summary>
public interface ISnapshotStore
{
    /// <summary>The latest snapshot of the stream, or null.</summary>
    ValueTask<Snapshot?> LoadSnapshotAsync(string stream, CancellationToken cancellationToken = default);

    /// <summary>Stores a snapshot, replacing an older one of the same stream (never a newer one).</summary>
    ValueTask SaveSnapshotAsync(Snapshot snapshot, CancellationToken cancellationToken = default);

    /// <summary>Stores a snapshot when <paramref name="unitOfWork"/> commits, together with its other writes.</summary>
    ValueTask SaveSnapshotAsync(Snapshot snapshot, IUnitOfWork unitOfWork, CancellationToken cancellationToken = default);
}
