using Herald.Internal;
using Herald.Persistence;

namespace Herald.Reliability.DeadLetters;

/// <summary>
/// Dead letters in process memory: the default store (tests, development, the embedded host until a durable store is
/// added). Bounded: beyond <see cref="Capacity"/> a write fails, so the pipeline keeps the message in its queue instead.
/// </summary>
public sealed class InMemoryDeadLetterStore : IDeadLetterStore
{
    private readonly SortedDictionary<Guid, DeadLetter> _records = [];
    private readonly Lock _gate = new();
    private readonly long _gateOrder = InMemoryUnitOfWork.NextGateOrder();

    // The owner of a unit of work's staged deletes: the store itself owns its staged adds, which cannot fail.
    private readonly object _deletesOwner = new();

    /// <summary>Creates a store holding at most 100,000 dead letters.</summary>
    public InMemoryDeadLetterStore()
        : this(100_000)
    {
    }

    /// <summary>Creates a store holding at most <paramref name="capacity"/> dead letters.</summary>
    public InMemoryDeadLetterStore(int capacity)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(capacity, 1);
        Capacity = capacity;
    }

    /// <summary>Most dead letters kept.</summary>
    public int Capacity { get; }

    /// <inheritdoc />
    public ValueTask<bool> AddAsync(DeadLetter deadLetter, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(deadLetter);
        deadLetter = Stored(deadLetter);
        lock (_gate)
        {
            if (_records.ContainsKey(deadLetter.Id))
            {
                return ValueTask.FromResult(false);
            }

            ThrowIfFull();
            _records.Add(deadLetter.Id, deadLetter);
        }

        return ValueTask.FromResult(true);
    }

    /// <inheritdoc />
    public ValueTask AddAsync(DeadLetter deadLetter, IUnitOfWork unitOfWork, Action<bool>? added = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(deadLetter);
        deadLetter = Stored(deadLetter);
        var own = InMemoryUnitOfWork.Of(unitOfWork);
        lock (_gate)
        {
            // Check room now, so the caller fails rather than the commit.
            ThrowIfFull();
        }

        var stored = false;
        own.Enlist(this, () => new InMemoryWrites(this)).Add(() =>
        {
            lock (_gate)
            {
                stored = _records.TryAdd(deadLetter.Id, deadLetter);
            }
        });
        if (added is not null)
        {
            own.OnCommitted(_ =>
            {
                added(stored);
                return ValueTask.CompletedTask;
            });
        }

        return ValueTask.CompletedTask;
    }

    /// <inheritdoc />
    public ValueTask<DeadLetter?> GetAsync(Guid id, CancellationToken cancellationToken = default)
    {
        lock (_gate)
        {
            return ValueTask.FromResult(_records.GetValueOrDefault(id));
        }
    }

    /// <inheritdoc />
    public ValueTask<IReadOnlyList<DeadLetter>> ListAsync(DeadLetterQuery query, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(query);
        lock (_gate)
        {
            return ValueTask.FromResult<IReadOnlyList<DeadLetter>>(Select(query));
        }
    }

    /// <inheritdoc />
    public ValueTask<long> CountAsync(DeadLetterQuery query, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(query);
        lock (_gate)
        {
            return ValueTask.FromResult((long)_records.Values.Count(query.Matches));
        }
    }

    /// <inheritdoc />
    public ValueTask<bool> DeleteAsync(Guid id, CancellationToken cancellationToken = default)
    {
        lock (_gate)
        {
            return ValueTask.FromResult(_records.Remove(id));
        }
    }

    /// <inheritdoc />
    public ValueTask DeleteAsync(Guid id, IUnitOfWork unitOfWork, CancellationToken cancellationToken = default)
    {
        // Checked and deleted under the lock at the commit, with the unit of work's other stores locked too: of two units
        // of work deleting one dead letter, the second to commit fails and applies nothing.
        var own = InMemoryUnitOfWork.Of(unitOfWork);
        own.Enlist(_deletesOwner, () => new StagedDeletes(this)).Add(id);
        return ValueTask.CompletedTask;
    }

    /// <inheritdoc />
    public ValueTask<int> DeleteManyAsync(DeadLetterQuery query, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(query);
        lock (_gate)
        {
            var selected = Select(query);
            foreach (var deadLetter in selected)
            {
                _records.Remove(deadLetter.Id);
            }

            return ValueTask.FromResult(selected.Count);
        }
    }

    /// <inheritdoc />
    public ValueTask<bool> RecordRetryFailureAsync(Guid id, string error, DateTimeOffset time, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(error);
        lock (_gate)
        {
            if (!_records.TryGetValue(id, out var deadLetter))
            {
                return ValueTask.FromResult(false);
            }

            _records[id] = deadLetter with { RetryCount = deadLetter.RetryCount + 1, LastRetryError = error, LastRetryTime = StoredTime.Of(time) };
            return ValueTask.FromResult(true);
        }
    }

    /// <summary>The dead letters one unit of work deletes: each must still be here at its commit, or the commit applies nothing.</summary>
    private sealed class StagedDeletes(InMemoryDeadLetterStore store) : GatedEnlistment<Guid>(store._deletesOwner, store._gate, store._gateOrder)
    {
        public override void Check()
        {
            foreach (var id in Staged)
            {
                if (!store._records.ContainsKey(id))
                {
                    throw new DeadLetterNotFoundException(id);
                }
            }
        }

        public override void Apply()
        {
            foreach (var id in Staged)
            {
                store._records.Remove(id);
            }
        }
    }

    // The dead letter with its times (its envelope's and its own) as every engine keeps them, so it reads back the same on
    // each; a copy only when one is not in that form already.
    private static DeadLetter Stored(DeadLetter deadLetter) =>
        StoredTime.IsStored(deadLetter.Envelope.Time) && StoredTime.IsStored(deadLetter.FirstFailureTime)
            && StoredTime.IsStored(deadLetter.LastFailureTime) && StoredTime.IsStored(deadLetter.LastRetryTime)
            ? deadLetter
            : deadLetter with
            {
                Envelope = StoredTime.Of(deadLetter.Envelope),
                FirstFailureTime = StoredTime.Of(deadLetter.FirstFailureTime),
                LastFailureTime = StoredTime.Of(deadLetter.LastFailureTime),
                LastRetryTime = StoredTime.Of(deadLetter.LastRetryTime),
            };

    private void ThrowIfFull()
    {
        if (_records.Count >= Capacity)
        {
            throw new InvalidOperationException(
                $"The in-memory dead-letter store is full ({Capacity} records); the message stays in its queue. Retry or purge dead letters, or use a durable store.");
        }
    }

    private List<DeadLetter> Select(DeadLetterQuery query)
    {
        IEnumerable<KeyValuePair<Guid, DeadLetter>> records = _records;
        if (query.After is { } after)
        {
            records = records.SkipWhile(r => r.Key.CompareTo(after) <= 0);
        }

        return [.. records.Select(r => r.Value).Where(query.Matches).Take(query.Limit)];
    }
}
