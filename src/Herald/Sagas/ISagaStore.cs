using Herald.Persistence;

namespace Herald.Sagas;

/// <summary>
/// Where saga instances live, with optimistic concurrency: a save names the version it loaded, and a save that finds
/// another version writes nothing and fails with <see cref="SagaConcurrencyException"/>. In a unit of work the
/// conflict surfaces at <see cref="IUnitOfWork.CommitAsync"/>, with nothing of the unit written, as for every store.
/// </summary>
public interface ISagaStore
{
    /// <summary>Loads an instance, or null when none is stored.</summary>
    ValueTask<SagaInstance?> LoadAsync(string sagaType, string id, CancellationToken cancellationToken = default);

    /// <summary>
    /// Saves <paramref name="instance"/> at once: inserts it when its <see cref="SagaInstance.Version"/> is 0, else updates
    /// the stored instance if it is still at that version. Returns the new version.
    /// </summary>
    ValueTask<long> SaveAsync(SagaInstance instance, CancellationToken cancellationToken = default);

    /// <summary>
    /// Enlists the save of <paramref name="instance"/> in <paramref name="unitOfWork"/>, with the same version rule; the
    /// stored version becomes <see cref="SagaInstance.Version"/> + 1 when the unit of work commits.
    /// </summary>
    ValueTask SaveAsync(SagaInstance instance, IUnitOfWork unitOfWork, CancellationToken cancellationToken = default);

    /// <summary>Lists instances, in (saga name, id) order.</summary>
    ValueTask<IReadOnlyList<SagaInstance>> ListAsync(SagaQuery query, CancellationToken cancellationToken = default);

    /// <summary>Deletes an instance if it is still at <paramref name="version"/>; false when it was not (or was not stored).</summary>
    ValueTask<bool> DeleteAsync(string sagaType, string id, long version, CancellationToken cancellationToken = default);
}
