using Herald.Internal;

namespace Herald.Sqlite.Internal;

/// <summary>A write waiting for the coordinator: it runs inside a shared transaction and learns its outcome only after the commit.</summary>
internal abstract class PendingWrite : IGroupCommitItem
{
    protected PendingWrite(CancellationToken cancellationToken) => CancellationToken = cancellationToken;

    /// <summary>The caller's token: honoured while the write waits, ignored once it runs (it then commits or fails with its group).</summary>
    public CancellationToken CancellationToken { get; }

    /// <summary>No budget but the count applies to SQLite groups.</summary>
    public long Weight => 0;

    /// <summary>The write's own failure inside the transaction (its savepoint was rolled back), reported after the group ends.</summary>
    public Exception? Failure { get; set; }

    /// <summary>Runs the write in the open transaction and keeps its result until <see cref="Complete"/>.</summary>
    public abstract void Execute(WriteSession session);

    /// <summary>Reports the kept result (or the write's own failure) once the transaction committed.</summary>
    public abstract void Complete();

    /// <summary>Reports a failure that undid the whole group (or a cancellation before the write ran).</summary>
    public abstract void Fail(Exception exception);

    /// <summary>Reports that the write was cancelled while it waited in the queue.</summary>
    public abstract void Cancel();
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

    public override void Complete()
    {
        if (Failure is not null)
        {
            Fail(Failure);
        }
        else
        {
            _outcome.TrySetResult(_result!);
        }
    }

    public override void Cancel() => _outcome.TrySetCanceled(CancellationToken);

    public override void Fail(Exception exception)
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
