using System.Runtime.CompilerServices;
using Herald.Persistence;

namespace Herald.Projections;

/// <summary>
/// The read-model changes projections enlisted in one unit of work, not committed yet, so a lookup later in the same unit
/// (a later event of the batch, or of the inline append) sees them. Kept here rather than in each store because the
/// engines apply their changes at different times (at once in memory, deferred in PostgreSQL, at the commit in SQLite).
/// </summary>
internal sealed class PendingReadModelWrites
{
    // Keyed by the unit of work itself (one per attempt), so the changes go away with it, committed or rolled back.
    private static readonly ConditionalWeakTable<IUnitOfWork, PendingReadModelWrites> ByUnitOfWork = new();

    private readonly Lock _gate = new();
    private readonly Dictionary<(string Table, int Generation, string Id), List<Func<string?, string?>>> _changes = [];
    private readonly HashSet<(string Table, string Id)> _documents = [];

    /// <summary>Remembers a change the store accepted in <paramref name="unitOfWork"/>.</summary>
    public static void Add(IUnitOfWork unitOfWork, string table, int generation, string id, Func<string?, string?> change)
    {
        var writes = ByUnitOfWork.GetValue(unitOfWork, static _ => new PendingReadModelWrites());
        lock (writes._gate)
        {
            var key = (table, generation, id);
            if (!writes._changes.TryGetValue(key, out var changes))
            {
                writes._changes[key] = changes = [];
                writes._documents.Add((table, id));
            }

            changes.Add(change);
        }
    }

    /// <summary>Whether <paramref name="unitOfWork"/> changed the document in any generation of <paramref name="table"/>.</summary>
    public static bool Touches(IUnitOfWork unitOfWork, string table, string id)
    {
        if (!ByUnitOfWork.TryGetValue(unitOfWork, out var writes))
        {
            return false;
        }

        lock (writes._gate)
        {
            return writes._documents.Contains((table, id));
        }
    }

    /// <summary>
    /// The document as <paramref name="unitOfWork"/> would leave it: <paramref name="committed"/> with its pending changes
    /// run in order (changes are pure functions of the document, so running them again here is safe).
    /// </summary>
    public static string? Overlay(IUnitOfWork unitOfWork, string table, int generation, string id, string? committed)
    {
        if (!ByUnitOfWork.TryGetValue(unitOfWork, out var writes))
        {
            return committed;
        }

        Func<string?, string?>[] changes;
        lock (writes._gate)
        {
            if (!writes._changes.TryGetValue((table, generation, id), out var pending))
            {
                return committed;
            }

            changes = [.. pending];
        }

        var json = committed;
        foreach (var change in changes)
        {
            json = change(json);
        }

        return json;
    }
}
