using Herald.EventSourcing;
using Herald.EventSourcing.InMemory;
using Herald.Conformance.EventSourcing;
using Herald.Persistence;

namespace Herald.Tests.EventSourcing;

/// <summary>The whole event store suite on the in-memory store. It has no transactions, so the torture test holds none open.</summary>
public sealed class InMemoryEventStoreConformanceTests : EventStoreConformance
{
    protected override bool SurvivesRestart => false;

    protected override Task<IEventStore> CreateStoreAsync(TimeProvider timeProvider) =>
        Task.FromResult<IEventStore>(new InMemoryEventStore(new InMemoryEventStoreOptions { TimeProvider = timeProvider }));

    protected override IUnitOfWork BeginUnitOfWork(IEventStore store) => new InMemoryUnitOfWork();
}
