using Herald.Internal;

namespace Herald.Sqlite.Internal;

/// <summary>A write waiting for the coordinator: it runs inside a shared transaction and learns its outcome only after the commit.</summary>
internal abstract class PendingWrite : IGroupCommitItem
{
    private const int Waiting = 0;
    private const int Running = 1;
    private const int Cancelled = 2;

    private int _state;
    private CancellationTokenRegistration _cancellation;

    protected PendingWrite(CancellationToken cancellationToken) => CancellationToken = cancellationToken;

    /// <summary>The caller's token: honoured while the write waits, ignored once it runs (it then commits or fails with its group).</summary>
    public CancellationToken CancellationToken { get; }

    /// <summary>No budget but the count applies to SQLite groups.</summary>
    public long Weight => 0;

    /// <summary>The write's own failure inside the transaction (its savepoint was rolled back), reported after the group ends.</summary>
    public Exception? Failure { get; set; }

    /// <summary>True while the write waits and its caller still wants it.</summary>
    public bool IsWanted => Volatile.Read(ref _state) == Waiting && !CancellationToken.IsCancellationRequested;

    /// <summary>
    /// Lets the caller go as soon as its token is cancelled while the write waits: in the queue, in a group waiting for an
    /// open append of this process to end, or in BEGIN for another connection's lock. The write then never runs.
    /// </summary>
    public void CancelWhileWaiting()
    {
        if (CancellationToken.CanBeCanceled)
        {
            _cancellation = CancellationToken.UnsafeRegister(static state => ((PendingWrite)state!).Cancel(), this);
        }
    }

    /// <summary>Stops listening to the token (the write was never queued, or its outcome is known).</summary>
    public void StopListening() => _cancellation.Unregister();

    /// <summary>Claims the write for running; false when its caller was let go as cancelled (it must not run).</summary>
    public bool TryStart()
    {
        if (CancellationToken.IsCancellationRequested)
        {
            Cancel();
            return false;
        }

        return Interlocked.CompareExchange(ref _state, Running, Waiting) == Waiting;
    }

    /// <summary>Runs the write in the open transaction and keeps its result until <see cref="Complete"/>.</summary>
    public abstract void Execute(WriteSession session);

    /// <summary>Reports the kept result (or the write's own failure) once the transaction committed.</summary>
    public void Complete()
    {
        StopListening();
        if (Failure is not null)
        {
            SetFailed(Failure);
        }
        else
        {
            SetResult();
        }
    }

    /// <summary>Reports a failure that undid the whole group (a write let go as cancelled keeps its cancellation).</summary>
    public void Fail(Exception exception)
    {
        StopListening();
        SetFailed(exception);
    }

    /// <summary>Completes the caller as cancelled, unless the write has started (then it commits or fails with its group).</summary>
    public void Cancel()
    {
        if (Interlocked.CompareExchange(ref _state, Cancelled, Waiting) == Waiting)
        {
            SetCanceled();
        }
    }

    protected abstract void SetResult();

    protected abstract void SetFailed(Exception exception);

    protected abstract void SetCanceled();
}

/// <summary>A write with a result of type <typeparamref name="T"/>.</summary>
internal sealed class PendingWrite<T> : PendingWrite
{
    private readonly Func<WriteSession, T> _write;
    private readonly TaskCompletionSource<T> _outcome = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private T? _result;

    public PendingWrite(Func<WriteSession, T> write, CancellationToken cancellationToken)
        : base(cancellationToken) => _write = write;

    public Task<T> Task => _outcome.Task;

    public override void Execute(WriteSession session) => _result = _write(session);

    protected override void SetResult() => _outcome.TrySetResult(_result!);

    protected override void SetCanceled() => _outcome.TrySetCanceled(CancellationToken);

    protected override void SetFailed(Exception exception)
    {
        if (exception is OperationCanceledException && CancellationToken.IsCancellationRequested)
        {
            _outcome.TrySetCanceled(CancellationToken);
        }
        else
        {
            _outcome.TrySetException(exception);
        }
    }
}
