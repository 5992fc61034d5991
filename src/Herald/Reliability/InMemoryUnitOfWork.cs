namespace Herald.Reliability;

/// <summary>The unit of work when no database provides one: nothing to commit, only the callbacks to run.</summary>
// It locks on itself: the instance is private to one attempt's scope, and one fewer object per message counts on the hot path.
#pragma warning disable CA2002
internal sealed class InMemoryUnitOfWork : IUnitOfWork, IAsyncDisposable
{
    private List<Func<CancellationToken, ValueTask>>? _committed;
    private List<Func<CancellationToken, ValueTask>>? _rolledBack;
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

    private async ValueTask CompleteAsync(bool commit, CancellationToken cancellationToken)
    {
        List<Func<CancellationToken, ValueTask>>? callbacks;
        lock (this)
        {
            if (_completed)
            {
                return;
            }

            _completed = true;
            callbacks = commit ? _committed : _rolledBack;
            _committed = null;
            _rolledBack = null;
        }

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
