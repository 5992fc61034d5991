using Herald.Persistence;

namespace Herald.Internal;

/// <summary>
/// What every engine's unit of work does alike: it completes once (commit or rollback), refuses enlistment afterwards and
/// runs the commit or rollback callbacks registered until then. An engine adds its writes under <see cref="Gate"/>.
/// </summary>
/// <remarks>An extension point for Herald's adapter packages, not for application code; it may change in any release.</remarks>
public abstract class UnitOfWorkBase : IUnitOfWork, IAsyncDisposable
{
    private List<Func<CancellationToken, ValueTask>>? _committed;
    private List<Func<CancellationToken, ValueTask>>? _rolledBack;
    private bool _completed;

    /// <summary>Guards the unit of work's state; an engine takes it for its own enlisted writes too.</summary>
    protected Lock Gate { get; } = new();

    /// <inheritdoc />
    public bool IsCompleted
    {
        get
        {
            lock (Gate)
            {
                return _completed;
            }
        }
    }

    /// <inheritdoc />
    public void OnCommitted(Func<CancellationToken, ValueTask> callback) => Add(ref _committed, callback);

    /// <inheritdoc />
    public void OnRolledBack(Func<CancellationToken, ValueTask> callback) => Add(ref _rolledBack, callback);

    /// <inheritdoc />
    public abstract ValueTask CommitAsync(CancellationToken cancellationToken = default);

    /// <inheritdoc />
    public abstract ValueTask RollbackAsync(CancellationToken cancellationToken = default);

    /// <summary>Rolls back unless committed or rolled back already.</summary>
    public ValueTask DisposeAsync()
    {
        GC.SuppressFinalize(this);
        return RollbackAsync(CancellationToken.None);
    }

    /// <summary>Throws when the unit of work has completed; call it under <see cref="Gate"/> before enlisting a write.</summary>
    protected void ThrowIfCompleted()
    {
        if (_completed)
        {
            throw new InvalidOperationException("This unit of work is already committed or rolled back; writes can no longer enlist in it.");
        }
    }

    /// <summary>
    /// Completes the unit of work and hands out the callbacks registered so far; false when it had completed already.
    /// Takes <see cref="Gate"/>, so an engine may call it inside its own lock to hand out its writes in the same step.
    /// </summary>
    protected bool TryComplete(out Callbacks callbacks)
    {
        lock (Gate)
        {
            callbacks = new Callbacks(_committed, _rolledBack);
            if (_completed)
            {
                return false;
            }

            _completed = true;
            (_committed, _rolledBack) = (null, null);
            return true;
        }
    }

    private void Add(ref List<Func<CancellationToken, ValueTask>>? callbacks, Func<CancellationToken, ValueTask> callback)
    {
        ArgumentNullException.ThrowIfNull(callback);
        lock (Gate)
        {
            ThrowIfCompleted();
            (callbacks ??= []).Add(callback);
        }
    }

    /// <summary>The callbacks of a completed unit of work.</summary>
    protected readonly struct Callbacks(List<Func<CancellationToken, ValueTask>>? committed, List<Func<CancellationToken, ValueTask>>? rolledBack)
    {
        /// <summary>Runs the commit callbacks in registration order (all of them; see <see cref="IUnitOfWork"/> for what it throws).</summary>
        public ValueTask CommittedAsync(CancellationToken cancellationToken) => UnitOfWorkCallbacks.RunAsync(committed, cancellationToken);

        /// <summary>Runs the rollback callbacks in registration order (all of them; see <see cref="IUnitOfWork"/> for what it throws).</summary>
        public ValueTask RolledBackAsync(CancellationToken cancellationToken) => UnitOfWorkCallbacks.RunAsync(rolledBack, cancellationToken);

        /// <summary>
        /// Runs the rollback callbacks after a commit that failed with <paramref name="commitFailure"/>; returns when none
        /// failed (the caller rethrows the commit's failure), else throws it together with theirs.
        /// </summary>
        public ValueTask CommitFailedAsync(Exception commitFailure) => UnitOfWorkCallbacks.RunAsync(rolledBack, CancellationToken.None, commitFailure);
    }
}
