namespace Herald.Persistence;

/// <summary>
/// The unit of work when no database provides one. The in-memory stores stage their writes in it, and <see cref="CommitAsync"/>
/// applies them: first the writes that can conflict (event appends, saga saves), each store's checked under its lock and all
/// of them checked before any is applied, then the rest, then the commit callbacks. A conflict in any store fails the commit
/// before anything is applied and runs the rollback callbacks, as a database's transaction would.
/// </summary>
// It locks on itself: the instance is private to one attempt's scope, and one fewer object per message counts on the hot path.
#pragma warning disable CA2002
internal sealed class InMemoryUnitOfWork : IUnitOfWork, IAsyncDisposable
{
    // The last place handed out by NextGateOrder.
    private static long s_gateOrder;

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
            (_enlistments ??= []).Add(created);
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

        if (commit)
        {
            try
            {
                // Cancelled before anything applied: it fails and writes nothing, as the engines' commits do.
                cancellationToken.ThrowIfCancellationRequested();
                if (enlistments is not null)
                {
                    ApplyAll(enlistments);
                }
            }
            catch (Exception ex)
            {
                await UnitOfWorkCallbacks.RunAsync(rolledBack, CancellationToken.None, ex).ConfigureAwait(false);
                throw;
            }
        }

        await UnitOfWorkCallbacks.RunAsync(callbacks, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>A place in the order every commit takes the stores' locks in, so two commits never wait for each other crosswise.</summary>
    internal static long NextGateOrder() => Interlocked.Increment(ref s_gateOrder);

    // The stores that may refuse their writes are locked (in gate order), all checked, then all applied, and only then
    // unlocked: nobody sees one store's writes without the others', and a refusal applies nothing. The rest cannot fail.
    // Runs for every handled message: the usual unit of work (one store that may refuse, or none) allocates nothing here.
    private static void ApplyAll(List<IInMemoryEnlistment> enlistments)
    {
        IInMemoryEnlistment? gated = null;
        var count = 0;
        foreach (var enlistment in enlistments)
        {
            if (enlistment.Gate is not null)
            {
                gated = enlistment;
                count++;
            }
        }

        if (count > 1)
        {
            ApplyGated(enlistments.FindAll(e => e.Gate is not null));
        }
        else if (gated is not null)
        {
            lock (gated.Gate!)
            {
                gated.Check();
                gated.Apply();
            }
        }

        foreach (var enlistment in enlistments)
        {
            if (enlistment.Gate is null)
            {
                enlistment.Apply();
            }
        }

        foreach (var enlistment in enlistments)
        {
            enlistment.Applied();
        }
    }

    private static void ApplyGated(List<IInMemoryEnlistment> gated)
    {
        gated.Sort(static (a, b) => a.GateOrder.CompareTo(b.GateOrder));
        var entered = 0;
        try
        {
            for (; entered < gated.Count; entered++)
            {
                gated[entered].Gate!.Enter();
            }

            foreach (var enlistment in gated)
            {
                enlistment.Check();
            }

            foreach (var enlistment in gated)
            {
                enlistment.Apply();
            }
        }
        finally
        {
            while (entered > 0)
            {
                gated[--entered].Gate!.Exit();
            }
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

    /// <summary>
    /// The store's lock when its writes may be refused (a stale expected version): the commit holds it across
    /// <see cref="Check"/> and <see cref="Apply"/>. Null for writes that cannot fail.
    /// </summary>
    Lock? Gate => null;

    /// <summary>Where the commit takes <see cref="Gate"/> among the stores' locks (see <see cref="InMemoryUnitOfWork.NextGateOrder"/>).</summary>
    long GateOrder => 0;

    /// <summary>Under <see cref="Gate"/>: throws, changing nothing, when a staged write would be refused.</summary>
    void Check()
    {
    }

    /// <summary>Applies every staged write (under <see cref="Gate"/>, once every enlistment's <see cref="Check"/> passed).</summary>
    void Apply();

    /// <summary>After the locks are released: wakes whoever waits for the writes.</summary>
    void Applied()
    {
    }
}

/// <summary>
/// An enlistment whose writes may be refused: the items one unit of work staged in a store, checked (<see cref="Check"/>)
/// and applied (<see cref="Apply"/>) under the store's lock, which the commit holds.
/// </summary>
internal abstract class GatedEnlistment<T>(object owner, Lock gate, long gateOrder) : IInMemoryEnlistment
{
    public object Owner => owner;

    public Lock Gate => gate;

    public long GateOrder => gateOrder;

    /// <summary>The staged items, in the order they were added.</summary>
    protected List<T> Staged { get; } = [];

    public void Add(T item)
    {
        lock (Staged)
        {
            Staged.Add(item);
        }
    }

    public abstract void Check();

    public abstract void Apply();
}

/// <summary>An enlistment whose writes cannot fail: a list of actions applied in order.</summary>
internal sealed class InMemoryWrites(object owner) : IInMemoryEnlistment
{
    private readonly List<Action> _writes = [];

    public object Owner { get; } = owner;

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
