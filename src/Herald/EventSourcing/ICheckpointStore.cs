using Herald.Persistence;

namespace Herald.EventSourcing;

/// <summary>Keeps how far each subscription or projection has processed the global log.</summary>
public interface ICheckpointStore
{
    /// <summary>The stored position, or null when the subscription has none yet.</summary>
    ValueTask<long?> GetCheckpointAsync(string subscriptionId, CancellationToken cancellationToken = default);

    /// <summary>Stores the position (the last one processed).</summary>
    ValueTask SetCheckpointAsync(string subscriptionId, long position, CancellationToken cancellationToken = default);

    /// <summary>
    /// Stores the position when <paramref name="unitOfWork"/> commits, together with its other writes (a read model and its
    /// checkpoint in one database commit at once: exactly once). Only forward: when the stored position is already at or past
    /// <paramref name="position"/> (another runner applied it), the unit of work fails with
    /// <see cref="CheckpointConflictException"/> and writes nothing.
    /// </summary>
    ValueTask SetCheckpointAsync(string subscriptionId, long position, IUnitOfWork unitOfWork, CancellationToken cancellationToken = default);
}
