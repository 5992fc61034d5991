using Herald.EventSourcing;
using Herald.EventSourcing.InMemory;
using Herald.Conformance.EventSourcing;

namespace Herald.Tests.EventSourcing;

/// <summary>The whole event store suite on the in-memory store. It has no transactions, so the torture test holds none open.</summary>
public sealed class InMemoryEventStoreConformanceTests : EventStoreConformance
{
    protected override Task<IEventStore> CreateStoreAsync() => Task.FromResult<IEventStore>(new InMemoryEventStore());
}
