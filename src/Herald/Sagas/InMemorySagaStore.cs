using Herald.Internal;
using Herald.Persistence;

namespace Herald.Sagas;

/// <summary>
/// Saga instances in memory, for tests and the embedded default without a database. It keeps the same version rule as
/// the durable stores; its instances live as long as the process.
/// </summary>
public sealed class InMemorySagaStore : ISagaStore
{
    private readonly SortedDictionary<(string SagaType, string Id), SagaInstance> _instances = new(SagaKeyComparer.Instance);
    private readonly Lock _gate = new();
    private readonly long _gateOrder = InMemoryUnitOfWork.NextGateOrder();
    private readonly TimeProvider _timeProvider;

    // Made once: a save in a unit of work would otherwise allocate this delegate every time.
    private readonly Func<StagedSaves> _newStagedSaves;

    /// <summary>Creates an empty store that stamps saves with <paramref name="timeProvider"/> (the system clock by default).</summary>
    public InMemorySagaStore(TimeProvider? timeProvider = null)
    {
        _timeProvider = timeProvider ?? TimeProvider.System;
        _newStagedSaves = () => new StagedSaves(this);
    }

    /// <inheritdoc />
    public ValueTask<SagaInstance?> LoadAsync(string sagaType, string id, CancellationToken cancellationToken = default)
    {
        if (!SagaValidation.CanBeStored(sagaType, id))
        {
            return ValueTask.FromResult<SagaInstance?>(null);
        }

        lock (_gate)
        {
            return ValueTask.FromResult(_instances.GetValueOrDefault((sagaType, id)));
        }
    }

    /// <inheritdoc />
    public ValueTask<long> SaveAsync(SagaInstance instance, CancellationToken cancellationToken = default)
    {
        SagaValidation.Validate(instance);
        cancellationToken.ThrowIfCancellationRequested();
        lock (_gate)
        {
            return ValueTask.FromResult(SaveUnderLock(instance, StoredTime.Of(_timeProvider.GetUtcNow())));
        }
    }

    /// <inheritdoc />
    public ValueTask SaveAsync(SagaInstance instance, IUnitOfWork unitOfWork, CancellationToken cancellationToken = default)
    {
        SagaValidation.Validate(instance);
        cancellationToken.ThrowIfCancellationRequested();
        InMemoryUnitOfWork.Of(unitOfWork).Enlist(this, _newStagedSaves).Add(instance);
        return ValueTask.CompletedTask;
    }

    /// <inheritdoc />
    public ValueTask<IReadOnlyList<SagaInstance>> ListAsync(SagaQuery query, CancellationToken cancellationToken = default)
    {
        SagaValidation.Validate(query);
        lock (_gate)
        {
            IReadOnlyList<SagaInstance> page = [.. _instances.Values.Where(query.Matches).Take(query.Limit)];
            return ValueTask.FromResult(page);
        }
    }

    /// <inheritdoc />
    public ValueTask<bool> DeleteAsync(string sagaType, string id, long version, CancellationToken cancellationToken = default)
    {
        if (!SagaValidation.CanBeStored(sagaType, id))
        {
            return ValueTask.FromResult(false);
        }

        lock (_gate)
        {
            var deleted = _instances.TryGetValue((sagaType, id), out var stored) && stored.Version == version && _instances.Remove((sagaType, id));
            return ValueTask.FromResult(deleted);
        }
    }

    // now: the save's time as every engine keeps it (StoredTime), so an instance reads back the same on each.
    private long SaveUnderLock(SagaInstance instance, DateTimeOffset now)
    {
        var key = (instance.SagaType, instance.Id);
        var stored = _instances.GetValueOrDefault(key);
        if ((stored?.Version ?? 0) != instance.Version)
        {
            throw new SagaConcurrencyException(instance.SagaType, instance.Id, instance.Version, stored?.Version);
        }

        var saved = instance with
        {
            Version = instance.Version + 1,
            // A state machine's instance has no steps: the shared empty list, not a copy of nothing per save.
            CompletedSteps = instance.CompletedSteps.Count == 0 ? [] : [.. instance.CompletedSteps],
            Data = instance.Data.ToArray(),
            Timeouts = [.. instance.Timeouts.Select(t => t with { Body = t.Body.ToArray() })],
            CreatedAt = stored?.CreatedAt ?? now,
            UpdatedAt = now,
        };
        _instances[key] = saved;
        return saved.Version;
    }

    // The saves one unit of work staged: all checked, then all applied, under the store's lock (which the commit holds), or none.
    private sealed class StagedSaves(InMemorySagaStore store) : GatedEnlistment<SagaInstance>(store, store._gate, store._gateOrder)
    {
        public override void Check()
        {
            // Two saves of one instance in one unit of work chain: the second expects the first's new version.
            var planned = Staged.Count == 1 ? null : new Dictionary<(string, string), long>();
            foreach (var save in Staged)
            {
                var key = (save.SagaType, save.Id);
                var current = planned is not null && planned.TryGetValue(key, out var next) ? next : store._instances.GetValueOrDefault(key)?.Version ?? 0;
                if (current != save.Version)
                {
                    throw new SagaConcurrencyException(save.SagaType, save.Id, save.Version, current == 0 ? null : current);
                }

                planned?[key] = save.Version + 1;
            }
        }

        public override void Apply()
        {
            var now = StoredTime.Of(store._timeProvider.GetUtcNow());
            foreach (var save in Staged)
            {
                store.SaveUnderLock(save, now);
            }
        }
    }
}
