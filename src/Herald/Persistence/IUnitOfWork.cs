namespace Herald.Persistence;

/// <summary>
/// The unit of work of one handled message (scoped in DI: one per attempt). Stores that share a database with it write
/// in its transaction (the inbox mark, outbox rows, events, saga state, the handler's own tables); the pipeline commits
/// it once, after the handlers succeeded and before the delivery is acked, and rolls it back when they fail.
/// SQL packages implement it over their connection; the in-memory one has no transaction and only runs the callbacks.
/// </summary>
/// <remarks>
/// Contract for implementers: <see cref="CommitAsync"/> makes every enlisted write durable at once, then runs the
/// <see cref="OnCommitted"/> callbacks in registration order; <see cref="RollbackAsync"/> discards them and runs the
/// <see cref="OnRolledBack"/> callbacks. Each completes the unit of work: later commits or rollbacks do nothing, and a
/// unit of work that is disposed (its scope ended) without either is rolled back.
/// <para>
/// Every callback runs, also after one before it threw (a later one may end an in-memory inbox mark or wake the outbox
/// relay); then the call throws what failed: one failure as is, several in an <see cref="AggregateException"/> in
/// registration order, and the cancellation alone when every failure was one. A commit that fails (a conflict) runs the
/// rollback callbacks and throws its own failure, or, when callbacks failed too, an <see cref="AggregateException"/> that
/// holds it first. A commit callback's failure comes after the writes committed: they stay committed.
/// </para>
/// </remarks>
public interface IUnitOfWork
{
    /// <summary>True once committed or rolled back.</summary>
    bool IsCompleted { get; }

    /// <summary>Registers work to run after a successful commit (such as waking the outbox relay).</summary>
    void OnCommitted(Func<CancellationToken, ValueTask> callback);

    /// <summary>Registers compensation for a rollback, for stores without a transaction (the in-memory inbox removes its mark).</summary>
    void OnRolledBack(Func<CancellationToken, ValueTask> callback);

    /// <summary>Commits every enlisted write, then runs the commit callbacks.</summary>
    ValueTask CommitAsync(CancellationToken cancellationToken = default);

    /// <summary>Discards every enlisted write, then runs the rollback callbacks.</summary>
    ValueTask RollbackAsync(CancellationToken cancellationToken = default);
}
