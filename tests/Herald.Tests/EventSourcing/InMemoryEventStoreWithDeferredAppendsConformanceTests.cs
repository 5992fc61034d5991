using Herald.EventSourcing;
using Herald.EventSourcing.InMemory;
using Herald.Messages;
using Herald.Conformance.EventSourcing;
using Herald.Persistence;

namespace Herald.Tests.EventSourcing;

/// <summary>
/// Runs the suite with the open-transaction hook switched on, on an in-memory stand-in: an "open" append is only written on
/// commit and dropped on rollback. It holds no reader back (the in-memory store has no transactions); it proves the torture
/// test's commit/rollback bookkeeping that the SQL stores rely on.
/// </summary>
public sealed class InMemoryEventStoreWithDeferredAppendsConformanceTests : EventStoreConformance
{
    protected override bool SurvivesRestart => false;

    protected override bool SupportsOpenTransactions => true;

    protected override TimeSpan OpenTransactionHold => TimeSpan.FromMilliseconds(200);

    protected override Task<IEventStore> CreateStoreAsync(TimeProvider timeProvider) =>
        Task.FromResult<IEventStore>(new InMemoryEventStore(new InMemoryEventStoreOptions { TimeProvider = timeProvider }));

    protected override IUnitOfWork BeginUnitOfWork(IEventStore store) => new InMemoryUnitOfWork();

    protected override Task<IOpenAppend?> BeginOpenAppendAsync(string stream, ExpectedVersion expectedVersion, IReadOnlyList<Envelope> events, CancellationToken cancellationToken = default) =>
        Task.FromResult<IOpenAppend?>(new DeferredAppend(Store, stream, expectedVersion, events));

    private sealed class DeferredAppend(IEventStore store, string stream, ExpectedVersion expectedVersion, IReadOnlyList<Envelope> events) : IOpenAppend
    {
        private bool _done;

        public async Task CommitAsync(CancellationToken cancellationToken = default)
        {
            _done = true;
            await store.AppendAsync(stream, expectedVersion, events, cancellationToken);
        }

        public Task RollbackAsync(CancellationToken cancellationToken = default)
        {
            _done = true;
            return Task.CompletedTask;
        }

        public ValueTask DisposeAsync() => _done ? ValueTask.CompletedTask : new ValueTask(RollbackAsync());
    }
}
