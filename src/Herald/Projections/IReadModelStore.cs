using Herald.Persistence;

namespace Herald.Projections;

/// <summary>
/// Tables of JSON documents keyed by id, which projections keep up to date and queries read: the read-model port. Each
/// table has generations: the live one serves reads while a rebuild fills the next, which then becomes the live one in one
/// unit of work (blue/green). Writes go through a unit of work, so a read model and its projection's checkpoint commit
/// together when they share a database. The persistence package registers it (<c>UseSqlite</c>, <c>UsePostgres</c>); the
/// default keeps the tables in memory.
/// </summary>
/// <remarks>
/// Contract for implementers: table names match <see cref="ReadModelNames.IsValid"/>; generations count from 1, and a
/// table never activated serves generation 1. Reads see committed documents of the active generation only. The storage of
/// a generation is created on first write (or by <see cref="ResetGenerationAsync"/>). <see cref="UpdateAsync"/> runs its
/// change against the document as the unit of work sees it (earlier updates of the same unit of work included), so
/// several events of one unit of work compose. Generations only move forward: a write of one older than the active one
/// (a runner a rebuild left behind) fails its unit of work with <see cref="ReadModelGenerationRetiredException"/>, checked
/// atomically with the write, and never creates that generation's storage again.
/// </remarks>
public interface IReadModelStore
{
    /// <summary>The JSON of the document <paramref name="id"/> in the active generation of <paramref name="table"/>, or null.</summary>
    ValueTask<string?> GetAsync(string table, string id, CancellationToken cancellationToken = default);

    /// <summary>
    /// The committed JSON of the document <paramref name="id"/> in <paramref name="generation"/> of <paramref name="table"/>,
    /// or null (also when that generation has no storage): what a projection reads of its own tables while a rebuild fills them.
    /// </summary>
    ValueTask<string?> GetAsync(string table, int generation, string id, CancellationToken cancellationToken = default);

    /// <summary>The documents of the active generation matching <paramref name="query"/>, in id order (ordinal).</summary>
    ValueTask<IReadOnlyList<ReadModelDocument>> QueryAsync(string table, ReadModelQuery query, CancellationToken cancellationToken = default);

    /// <summary>
    /// Enlists in <paramref name="unitOfWork"/> a change of the document <paramref name="id"/> of one generation:
    /// <paramref name="change"/> gets its JSON (null when absent) and returns the new JSON, or null to delete it. It may run
    /// at the commit (SQLite) or at once in the transaction (PostgreSQL); an exception it throws fails the unit of work.
    /// </summary>
    ValueTask UpdateAsync(string table, int generation, string id, Func<string?, string?> change, IUnitOfWork unitOfWork, CancellationToken cancellationToken = default);

    /// <summary>The generation of <paramref name="table"/> that reads see (1 until another is activated).</summary>
    ValueTask<int> GetActiveGenerationAsync(string table, CancellationToken cancellationToken = default);

    /// <summary>Creates the storage of a generation, emptied (what a failed rebuild left behind is gone). Never the active one.</summary>
    ValueTask ResetGenerationAsync(string table, int generation, CancellationToken cancellationToken = default);

    /// <summary>Enlists in <paramref name="unitOfWork"/> the switch of reads to <paramref name="generation"/>.</summary>
    ValueTask ActivateGenerationAsync(string table, int generation, IUnitOfWork unitOfWork, CancellationToken cancellationToken = default);

    /// <summary>Drops the storage of a generation that is no longer active; does nothing when it does not exist.</summary>
    ValueTask DropGenerationAsync(string table, int generation, CancellationToken cancellationToken = default);
}
