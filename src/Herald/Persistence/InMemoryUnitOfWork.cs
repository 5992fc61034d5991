namespace Herald.Persistence;

/// <summary>
/// The unit of work when no database provides one. The in-memory stores stage their writes in it, and <see cref="CommitAsync"/>
/// applies them: first the writes that can conflict (event appends, checked and applied under their store's lock), then the
/// rest, then the commit callbacks. A conflict fails the commit before anything is applied and runs the rollback callbacks.
/// </summary>
// It locks on itself: the instance is private to one attempt's scope, and one fewer object per message counts on the hot path.
#pragma warning disable CA2002
internal sealed class InMemoryUnitOfWork : IUnitOfWork, IAsyncDisposable
{
    private List<Func<CancellationToken, ValueTask>>? _committed;
    private List<Func<CancellationToken, ValueTask>>? _rolledBack;
    private List<IInMemoryEnlistment>? _enlistments;
    private bool _completed;

    public bool IsCompleted
    {
        get
        {
            lock (this)
            {
                return _completed;
            }
        }
    }

    public void OnCommitted(Func<CancellationToken, ValueTask> callback)
    {
        ArgumentNullException.ThrowIfNull(callback);
        lock (this)
        {
            ThrowIfCompleted();
            (_committed ??= []).Add(callback);
        }
    }

    public void OnRolledBack(Func<CancellationToken, ValueTask> callback)
    {
        ArgumentNullException.ThrowIfNull(callback);
        lock (this)
        {
            ThrowIfCompleted();
            (_rolledBack ??= []).Add(callback);
        }
    }

    public ValueTask CommitAsync(CancellationToken cancellationToken = default) => CompleteAsync(commit: true, cancellationToken);

    public ValueTask RollbackAsync(CancellationToken cancellationToken = default) => CompleteAsync(commit: false, cancellationToken);

    public ValueTask DisposeAsync() => RollbackAsync(CancellationToken.None);

    /// <summary>The unit of work as the in-memory one, which alone can hold an in-memory store's writes.</summary>
    internal static InMemoryUnitOfWork Of(IUnitOfWork unitOfWork)
    {
        ArgumentNullException.ThrowIfNull(unitOfWork);
        return unitOfWork as InMemoryUnitOfWork
            ?? throw new ArgumentException($"An in-memory store can only enlist in the in-memory unit of work, not in a {unitOfWork.GetType().Name}.", nameof(unitOfWork));
    }

    /// <summary>
    /// The enlistment of <paramref name="owner"/> (one per store and unit of work), created on first use; the store adds its
    /// staged writes to it.
    /// </summary>
    internal T Enlist<T>(object owner, Func<T> create)
        where T : class, IInMemoryEnlistment
    {
        lock (this)
        {
            ThrowIfCompleted();
            foreach (var existing in _enlistments ?? [])
            {
                if (ReferenceEquals(existing.Owner, owner))
                {
                    return (T)existing;
                }
            }

            var created = create();
            var list = _enlistments ??= [];
            if (created.CanConflict && list.Exists(e => e.CanConflict))
            {
                // Two stores that may each refuse their writes could not be applied all-or-nothing without a shared lock.
                throw new InvalidOperationException("One in-memory unit of work can hold the version-checked writes of one store only (the appends of one event store, or the saves of one saga store).");
            }

            list.Add(created);
            return created;
        }
    }

    private async ValueTask CompleteAsync(bool commit, CancellationToken cancellationToken)
    {
        List<Func<CancellationToken, ValueTask>>? callbacks;
        List<Func<CancellationToken, ValueTask>>? rolledBack;
        List<IInMemoryEnlistment>? enlistments;
        lock (this)
        {
            if (_completed)
            {
                return;
            }

            _completed = true;
            callbacks = commit ? _committed : _rolledBack;
            rolledBack = _rolledBack;
            enlistments = _enlistments;
            (_committed, _rolledBack, _enlistments) = (null, null, null);
        }

        if (commit && enlistments is not null)
        {
            try
            {
                // The one that may conflict checks and applies under its own lock first; the others cannot fail.
                foreach (var enlistment in enlistments)
                {
                    if (enlistment.CanConflict)
                    {
                        enlistment.Apply();
                    }
                }

                foreach (var enlistment in enlistments)
                {
                    if (!enlistment.CanConflict)
                    {
                        enlistment.Apply();
                    }
                }
            }
            catch
            {
                await RunAsync(rolledBack, CancellationToken.None).ConfigureAwait(false);
                throw;
            }
        }

        await RunAsync(callbacks, cancellationToken).ConfigureAwait(false);
    }

    private static async ValueTask RunAsync(List<Func<CancellationToken, ValueTask>>? callbacks, CancellationToken cancellationToken)
    {
        foreach (var callback in callbacks ?? [])
        {
            await callback(cancellationToken).ConfigureAwait(false);
        }
    }

    private void ThrowIfCompleted()
    {
        if (_completed)
        {
            throw new InvalidOperationException("This unit of work is already committed or rolled back; writes can no longer enlist in it.");
        }
    }
}

/// <summary>The staged writes of one in-memory store in one <see cref="InMemoryUnitOfWork"/>.</summary>
internal interface IInMemoryEnlistment
{
    /// <summary>The store the writes belong to.</summary>
    object Owner { get; }

    /// <summary>True when <see cref="Apply"/> may refuse the writes (a stale expected version); it then applies none of them.</summary>
    bool CanConflict { get; }

    /// <summary>Applies every staged write, or (when <see cref="CanConflict"/>) throws and applies none.</summary>
    void Apply();
}

/// <summary>An enlistment whose writes cannot fail: a list of actions applied in order.</summary>
internal sealed class InMemoryWrites(object owner) : IInMemoryEnlistment
{
    private readonly List<Action> _writes = [];

    public object Owner { get; } = owner;

    public bool CanConflict => false;

    public void Add(Action write)
    {
        lock (_writes)
        {
            _writes.Add(write);
        }
    }

    public void Apply()
    {
        foreach (var write in _writes)
        {
            write();
        }
    }
}
