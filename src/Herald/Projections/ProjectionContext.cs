using Herald.Internal;
using Herald.Messages;
using Herald.Persistence;

namespace Herald.Projections;

/// <summary>
/// What a projection's handler knows about the event it applies, and where it writes: the read-model tables its projection
/// declared, in the unit of work that also commits its checkpoint (async) or the events themselves (inline).
/// </summary>
public sealed class ProjectionContext
{
    private readonly Projection _projection;
    private readonly IReadModelStore _store;
    private readonly ProjectionRun _run;

    internal ProjectionContext(Projection projection, IReadModelStore store, Envelope envelope, ProjectionRun run, IUnitOfWork unitOfWork, IServiceProvider services)
    {
        _projection = projection;
        _store = store;
        _run = run;
        Envelope = envelope;
        UnitOfWork = unitOfWork;
        Services = services;
    }

    /// <summary>The event's envelope (id, type, time, correlation, headers).</summary>
    public Envelope Envelope { get; }

    /// <summary>The stream the event belongs to.</summary>
    public string Stream => _run.Stream;

    /// <summary>Its position in the global log; null for an inline projection, which runs before the commit assigns one.</summary>
    public long? Position => _run.Position;

    /// <summary>The generation of the read models being written: the live one, or the next while a rebuild runs.</summary>
    public int Generation => _run.Generation;

    /// <summary>The unit of work the read-model writes commit in; the handler may enlist its own tables' writes in it too.</summary>
    public IUnitOfWork UnitOfWork { get; }

    /// <summary>The services of the event's scope (lookups for enrichment, the application's own stores).</summary>
    public IServiceProvider Services { get; }

    /// <summary>Writes <paramref name="document"/> as <paramref name="id"/>, replacing what was there.</summary>
    public ValueTask UpsertAsync<T>(ReadModelTable<T> table, string id, T document)
        where T : class
    {
        ArgumentNullException.ThrowIfNull(document);
        var json = Writable(table).Serialize(document);
        return WriteAsync(table.Name, id, _ => json);
    }

    /// <summary>
    /// Changes the document <paramref name="id"/>: <paramref name="change"/> gets it (null when absent, including earlier
    /// changes of this unit of work) and returns the new one, or null to delete it.
    /// </summary>
    public ValueTask UpdateAsync<T>(ReadModelTable<T> table, string id, Func<T?, T?> change)
        where T : class
    {
        ArgumentNullException.ThrowIfNull(change);
        Writable(table);
        return WriteAsync(table.Name, id, json => change(table.Deserialize(json)) is { } changed ? table.Serialize(changed) : null);
    }

    /// <summary>
    /// Changes the document <paramref name="id"/> when it exists (<paramref name="change"/> returns the new one, or null to
    /// delete it); does nothing when it does not.
    /// </summary>
    public ValueTask UpdateExistingAsync<T>(ReadModelTable<T> table, string id, Func<T, T?> change)
        where T : class
    {
        ArgumentNullException.ThrowIfNull(change);
        return UpdateAsync(table, id, current => current is null ? null : change(current));
    }

    /// <summary>Deletes the document <paramref name="id"/> (nothing when absent).</summary>
    public ValueTask DeleteAsync<T>(ReadModelTable<T> table, string id)
        where T : class
    {
        Writable(table);
        return WriteAsync(table.Name, id, static _ => null);
    }

    /// <summary>
    /// Reads a document, with the changes this unit of work made to it before (an earlier event of the batch): of another
    /// projection's table, its live generation (a lookup for enrichment, a customer's name for an order summary); of one of
    /// this projection's own tables, the generation it writes (while a rebuild runs, the one being rebuilt).
    /// </summary>
    public async ValueTask<T?> LookupAsync<T>(ReadModelTable<T> table, string id, CancellationToken cancellationToken = default)
        where T : class
    {
        ArgumentNullException.ThrowIfNull(table);
        ArgumentNullException.ThrowIfNull(id);

        // A rebuild replays into a fresh generation: its own earlier results are there, not in the one that still serves.
        // Another projection's table serves a generation of its own (2 once rebuilt, while this one is at 1), which its
        // writes earlier in this unit of work (inline, the same append) went to. (Its committed document is read by the
        // store's own active-generation read, which copes with a rebuild dropping the generation it just found.)
        int generation;
        string? committed;
        if (_projection.Keeps(table.Name))
        {
            generation = Generation;
            committed = await _store.GetAsync(table.Name, generation, id, cancellationToken).ConfigureAwait(false);
        }
        else
        {
            committed = await _store.GetAsync(table.Name, id, cancellationToken).ConfigureAwait(false);
            if (!PendingReadModelWrites.Touches(UnitOfWork, table.Name, id))
            {
                // Nothing of this unit of work to overlay: no round trip for the generation (the common enrichment lookup).
                return table.Deserialize(committed);
            }

            generation = await _store.GetActiveGenerationAsync(table.Name, cancellationToken).ConfigureAwait(false);
        }

        return table.Deserialize(PendingReadModelWrites.Overlay(UnitOfWork, table.Name, generation, id, committed));
    }

    private async ValueTask WriteAsync(string table, string id, Func<string?, string?> change)
    {
        // Refused alike on every engine (what PostgreSQL cannot store): the event takes the projection's failure policy
        // (retries, then the dead letters).
        var storable = StorableReadModelWrites.Storable("Projection", _projection.Name, table, id, change);
        await _store.UpdateAsync(table, Generation, id, storable, UnitOfWork).ConfigureAwait(false);
        PendingReadModelWrites.Add(UnitOfWork, table, Generation, id, storable);
    }

    private ReadModelTable<T> Writable<T>(ReadModelTable<T> table)
        where T : class
    {
        ArgumentNullException.ThrowIfNull(table);
        if (!_projection.Keeps(table.Name))
        {
            throw new InvalidOperationException(
                $"Projection '{_projection.Name}' writes the table '{table.Name}' without declaring it; declare it with Table(...) in the constructor, so a rebuild replaces it too.");
        }

        return table;
    }
}
