using Herald.Internal;
using Herald.Persistence;
namespace Herald.Reliability.Outbox;

/// <summary>
/// Outbox rows in process memory, for tests and the in-process host. Rows added in a unit of work appear when it
/// commits. Bounded: beyond <see cref="Capacity"/> rows an add fails, or the in-memory unit of work's commit when the store
/// filled since, before anything of it applies (so the handler fails and is retried, nothing is lost).
/// </summary>
public sealed class InMemoryOutboxStore : IOutboxStore
{
    private readonly List<OutboxMessage> _rows = [];
    private readonly Lock _gate = new();
    private readonly long _gateOrder = InMemoryUnitOfWork.NextGateOrder();
    private readonly Func<StagedRows> _newStagedRows;

    /// <summary>Creates a store holding at most 100,000 rows.</summary>
    public InMemoryOutboxStore()
        : this(100_000)
    {
    }

    /// <summary>Creates a store holding at most <paramref name="capacity"/> rows.</summary>
    public InMemoryOutboxStore(int capacity)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(capacity, 1);
        Capacity = capacity;
        _newStagedRows = () => new StagedRows(this);
    }

    /// <summary>Most rows kept, pending and sent.</summary>
    public int Capacity { get; }

    /// <inheritdoc />
    public ValueTask AddAsync(IReadOnlyList<OutboxMessage> messages, IUnitOfWork? unitOfWork = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(messages);
        if (unitOfWork is null)
        {
            Append([.. messages]);
            return ValueTask.CompletedTask;
        }

        lock (_gate)
        {
            // Check room now, so the handler fails (and is retried) rather than the commit.
            EnsureRoom(messages.Count);
        }

        if (unitOfWork is InMemoryUnitOfWork own)
        {
            // Checked again at the commit, under the store's lock and before any write of the unit of work applies: the
            // outbox may have filled since. Appended from a commit callback, the rows failed after the rest had committed.
            own.Enlist(this, _newStagedRows).Add(messages);
        }
        else
        {
            List<OutboxMessage> copy = [.. messages];
            unitOfWork.OnCommitted(_ =>
            {
                Append(copy);
                return ValueTask.CompletedTask;
            });
        }

        return ValueTask.CompletedTask;
    }

    /// <inheritdoc />
    public ValueTask<IReadOnlyList<OutboxMessage>> FetchPendingAsync(int maxCount, DateTimeOffset? dueBy = null, CancellationToken cancellationToken = default)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(maxCount, 1);
        lock (_gate)
        {
            var due = new List<OutboxMessage>();
            var waitingKeys = new HashSet<string>(StringComparer.Ordinal);
            foreach (var row in _rows)
            {
                if (due.Count == maxCount)
                {
                    break;
                }

                if (row.SentAt is not null)
                {
                    continue;
                }

                if (dueBy is { } by && row.NextAttemptAt > by)
                {
                    // Later rows of its key wait with it, so the key's order holds.
                    if (row.PartitionKey is { } key)
                    {
                        waitingKeys.Add(key);
                    }

                    continue;
                }

                if (dueBy is null || row.PartitionKey is null || !waitingKeys.Contains(row.PartitionKey))
                {
                    due.Add(row);
                }
            }

            return ValueTask.FromResult<IReadOnlyList<OutboxMessage>>(due);
        }
    }

    /// <inheritdoc />
    public ValueTask RecordFailedAttemptAsync(Guid id, DateTimeOffset nextAttemptAt, CancellationToken cancellationToken = default)
    {
        lock (_gate)
        {
            var i = _rows.FindIndex(r => r.Id == id);
            if (i >= 0 && _rows[i].SentAt is null)
            {
                _rows[i] = _rows[i] with { Attempts = _rows[i].Attempts + 1, NextAttemptAt = StoredTime.Of(nextAttemptAt) };
            }
        }

        return ValueTask.CompletedTask;
    }

    /// <inheritdoc />
    public ValueTask MarkSentAsync(IReadOnlyCollection<Guid> ids, DateTimeOffset sentAt, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(ids);
        var set = ids.ToHashSet();
        sentAt = StoredTime.Of(sentAt);
        lock (_gate)
        {
            for (var i = 0; i < _rows.Count; i++)
            {
                if (_rows[i].SentAt is null && set.Contains(_rows[i].Id))
                {
                    _rows[i] = _rows[i] with { SentAt = sentAt };
                }
            }
        }

        return ValueTask.CompletedTask;
    }

    /// <inheritdoc />
    public ValueTask<int> DeleteSentAsync(DateTimeOffset sentBefore, int maxCount, CancellationToken cancellationToken = default)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(maxCount, 1);
        lock (_gate)
        {
            var deleted = 0;
            _rows.RemoveAll(r => deleted < maxCount && r.SentAt is { } sent && sent < sentBefore && ++deleted > 0);
            return ValueTask.FromResult(deleted);
        }
    }

    /// <inheritdoc />
    public ValueTask<long> CountPendingAsync(CancellationToken cancellationToken = default)
    {
        lock (_gate)
        {
            return ValueTask.FromResult((long)_rows.Count(r => r.SentAt is null));
        }
    }

    /// <inheritdoc />
    public ValueTask<OutboxMessage?> GetAsync(Guid id, CancellationToken cancellationToken = default)
    {
        lock (_gate)
        {
            return ValueTask.FromResult(_rows.Find(r => r.Id == id));
        }
    }

    private void Append(List<OutboxMessage> messages)
    {
        lock (_gate)
        {
            EnsureRoom(messages.Count);
            foreach (var message in messages)
            {
                _rows.Add(Stored(message));
            }
        }
    }

    // The row with its times (its envelope's and its own) as every engine keeps them, so it reads back the same on each; a
    // copy only when one is not in that form already (never for a row the Outbox wrote), so the usual add allocates nothing.
    private static OutboxMessage Stored(OutboxMessage message) =>
        StoredTime.IsStored(message.Envelope.Time) && StoredTime.IsStored(message.CreatedAt) && StoredTime.IsStored(message.DeliverAt)
            && StoredTime.IsStored(message.SentAt) && StoredTime.IsStored(message.NextAttemptAt)
            ? message
            : message with
            {
                Envelope = StoredTime.Of(message.Envelope),
                CreatedAt = StoredTime.Of(message.CreatedAt),
                DeliverAt = StoredTime.Of(message.DeliverAt),
                SentAt = StoredTime.Of(message.SentAt),
                NextAttemptAt = StoredTime.Of(message.NextAttemptAt),
            };

    private void EnsureRoom(int count)
    {
        if (_rows.Count + count > Capacity)
        {
            throw new InvalidOperationException($"The in-memory outbox is full ({Capacity} rows); the messages were not added.");
        }
    }

    // The rows one unit of work added: checked for room, then appended, under the store's lock (which the commit holds).
    private sealed class StagedRows(InMemoryOutboxStore store) : IInMemoryEnlistment
    {
        private readonly List<OutboxMessage> _rows = [];

        public object Owner => store;

        public Lock Gate => store._gate;

        public long GateOrder => store._gateOrder;

        public void Add(IReadOnlyList<OutboxMessage> rows)
        {
            lock (_rows)
            {
                foreach (var row in rows)
                {
                    _rows.Add(Stored(row));
                }
            }
        }

        public void Check() => store.EnsureRoom(_rows.Count);

        public void Apply() => store._rows.AddRange(_rows);
    }
}
