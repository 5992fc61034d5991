using System.Text.Json.Nodes;
using Herald.Internal;
using Herald.Persistence;

namespace Herald.Projections;

/// <summary>
/// The default read-model store: tables in process memory, lost on restart, for tests and the in-memory host. A change runs
/// at once against the document as its unit of work sees it (earlier changes of the same unit included), so a change that
/// throws fails the unit of work before anything is applied; at the commit the changes run again, in order, under the
/// store's lock, against the documents as committed then, so two units of work changing one document never lose an update.
/// Changes must therefore be pure functions of the document they get. A unit of work writing a generation older than the
/// active one fails at its commit (<see cref="ReadModelGenerationRetiredException"/>) and applies nothing.
/// </summary>
internal sealed class InMemoryReadModelStore : IReadModelStore
{
    private readonly Lock _gate = new();
    private readonly Dictionary<(string Table, int Generation), SortedDictionary<string, string>> _tables = [];
    private readonly Dictionary<string, int> _active = new(StringComparer.Ordinal);
    private readonly long _gateOrder = InMemoryUnitOfWork.NextGateOrder();

    public ValueTask<string?> GetAsync(string table, string id, CancellationToken cancellationToken = default)
    {
        ReadModelNames.Validate(table);
        ArgumentNullException.ThrowIfNull(id);
        lock (_gate)
        {
            return new(_tables.GetValueOrDefault((table, ActiveGeneration(table)))?.GetValueOrDefault(id));
        }
    }

    public ValueTask<string?> GetAsync(string table, int generation, string id, CancellationToken cancellationToken = default)
    {
        ReadModelNames.Validate(table);
        ReadModelNames.ValidateGeneration(generation);
        ArgumentNullException.ThrowIfNull(id);
        lock (_gate)
        {
            return new(_tables.GetValueOrDefault((table, generation))?.GetValueOrDefault(id));
        }
    }

    public ValueTask<IReadOnlyList<ReadModelDocument>> QueryAsync(string table, ReadModelQuery query, CancellationToken cancellationToken = default)
    {
        ReadModelNames.Validate(table);
        ReadModelNames.Validate(query);
        var found = new List<ReadModelDocument>();
        lock (_gate)
        {
            if (_tables.GetValueOrDefault((table, ActiveGeneration(table))) is not { } documents)
            {
                return new([]);
            }

            foreach (var (id, json) in documents)
            {
                if (query.AfterId is { } after && CodePointOrder.Instance.Compare(id, after) <= 0)
                {
                    continue;
                }

                if (Matches(json, query.Where))
                {
                    found.Add(new ReadModelDocument(id, json));
                    if (found.Count == query.Limit)
                    {
                        break;
                    }
                }
            }
        }

        return new(found);
    }

    public ValueTask UpdateAsync(string table, int generation, string id, Func<string?, string?> change, IUnitOfWork unitOfWork, CancellationToken cancellationToken = default)
    {
        change = ReadModelNames.ValidateUpdate(table, generation, id, change);
        cancellationToken.ThrowIfCancellationRequested();
        var staged = InMemoryUnitOfWork.Of(unitOfWork).Enlist(this, () => new StagedChanges(this));
        var key = (table, generation, id);
        string? current;
        if (!staged.Pending.TryGetValue(key, out current))
        {
            lock (_gate)
            {
                current = _tables.GetValueOrDefault((table, generation))?.GetValueOrDefault(id);
            }
        }

        staged.Pending[key] = change(current);
        staged.Changes.Add((key, change));
        return ValueTask.CompletedTask;
    }

    public ValueTask<int> GetActiveGenerationAsync(string table, CancellationToken cancellationToken = default)
    {
        ReadModelNames.Validate(table);
        lock (_gate)
        {
            return new(ActiveGeneration(table));
        }
    }

    public ValueTask ResetGenerationAsync(string table, int generation, CancellationToken cancellationToken = default)
    {
        ReadModelNames.Validate(table);
        ReadModelNames.ValidateGeneration(generation);
        lock (_gate)
        {
            StorableReadModelWrites.ThrowIfActive(table, generation, ActiveGeneration(table), "reset");

            _tables[(table, generation)] = new SortedDictionary<string, string>(CodePointOrder.Instance);
        }

        return ValueTask.CompletedTask;
    }

    public ValueTask ActivateGenerationAsync(string table, int generation, IUnitOfWork unitOfWork, CancellationToken cancellationToken = default)
    {
        ReadModelNames.Validate(table);
        ReadModelNames.ValidateGeneration(generation);
        InMemoryUnitOfWork.Of(unitOfWork).Enlist(this, () => new StagedChanges(this)).Activations[table] = generation;
        return ValueTask.CompletedTask;
    }

    public ValueTask DropGenerationAsync(string table, int generation, CancellationToken cancellationToken = default)
    {
        ReadModelNames.Validate(table);
        ReadModelNames.ValidateGeneration(generation);
        lock (_gate)
        {
            StorableReadModelWrites.ThrowIfActive(table, generation, ActiveGeneration(table), "dropped");

            _tables.Remove((table, generation));
        }

        return ValueTask.CompletedTask;
    }

    private static bool Matches(string json, IReadOnlyDictionary<string, string> where)
    {
        if (where.Count == 0)
        {
            return true;
        }

        if (JsonNode.Parse(json) is not JsonObject document)
        {
            return false;
        }

        foreach (var (property, value) in where)
        {
            if (document[property] is not JsonValue node || !node.TryGetValue<string>(out var actual) || !string.Equals(actual, value, StringComparison.Ordinal))
            {
                return false;
            }
        }

        return true;
    }

    private int ActiveGeneration(string table) => _active.GetValueOrDefault(table, 1);

    // Under the gate, before any store of the unit of work applies: a write of a generation a newer one replaced (a runner
    // a rebuild left behind) fails the whole unit, so the retired generation is never made again. The changes run here too,
    // on the documents as they are now: one may throw on a document another unit changed since it was staged, and that too
    // must fail the unit before any store applied (the gate stays held until Apply, so what they computed stays current).
    private void Check(StagedChanges staged)
    {
        var changed = new Dictionary<(string Table, int Generation, string Id), string?>();
        foreach (var ((table, generation, id), change) in staged.Changes)
        {
            var active = ActiveGeneration(table);
            if (generation < active)
            {
                throw new ReadModelGenerationRetiredException(table, generation, active);
            }

            if (!changed.TryGetValue((table, generation, id), out var current))
            {
                current = _tables.GetValueOrDefault((table, generation))?.GetValueOrDefault(id);
            }

            changed[(table, generation, id)] = change(current);
        }

        staged.Changed = changed;
    }

    private void Apply(StagedChanges staged)
    {
        lock (_gate)
        {
            foreach (var ((table, generation, id), json) in staged.Changed ?? [])
            {
                if (!_tables.TryGetValue((table, generation), out var documents))
                {
                    documents = _tables[(table, generation)] = new SortedDictionary<string, string>(CodePointOrder.Instance);
                }

                if (json is null)
                {
                    documents.Remove(id);
                }
                else
                {
                    documents[id] = json;
                }
            }

            foreach (var (table, generation) in staged.Activations)
            {
                _active[table] = generation;
            }
        }
    }

    private sealed class StagedChanges(InMemoryReadModelStore store) : IInMemoryEnlistment
    {
        public Dictionary<(string Table, int Generation, string Id), string?> Pending { get; } = [];

        public List<((string Table, int Generation, string Id) Key, Func<string?, string?> Change)> Changes { get; } = [];

        public Dictionary<string, int> Activations { get; } = new(StringComparer.Ordinal);

        /// <summary>The documents as the commit writes them, computed by Check under the gate.</summary>
        public Dictionary<(string Table, int Generation, string Id), string?>? Changed { get; set; }

        public object Owner => store;

        public Lock Gate => store._gate;

        public long GateOrder => store._gateOrder;

        public void Check() => store.Check(this);

        public void Apply() => store.Apply(this);
    }
}
