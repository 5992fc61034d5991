namespace Herald.Conformance.EventSourcing;

/// <summary>
/// An append a store performed inside a transaction it still holds open (see
/// <see cref="EventStoreConformance.BeginOpenAppendAsync"/>). Disposing it without committing rolls it back.
/// </summary>
public interface IOpenAppend : IAsyncDisposable
{
    /// <summary>Commits the held transaction; its events become readable.</summary>
    Task CommitAsync(CancellationToken cancellationToken = default);

    /// <summary>Rolls the held transaction back; its events must never be read or delivered.</summary>
    Task RollbackAsync(CancellationToken cancellationToken = default);
}
