using Herald.Conformance.Projections;
using Herald.EventSourcing;
using Herald.EventSourcing.InMemory;
using Herald.Persistence;
using Herald.Projections;

namespace Herald.Tests.Projections;

public sealed class InMemoryReadModelStoreConformanceTests : ReadModelStoreConformance
{
    private readonly InMemoryReadModelStore _store = new();
    private readonly InMemoryEventStore _events = new();

    protected override ValueTask<IReadModelStore> CreateStoreAsync() => new(_store);

    protected override ValueTask<(IEventStore Events, ICheckpointStore Checkpoints)> GetEventLogAsync(IReadModelStore store) => new((_events, _events));

    protected override ValueTask<IUnitOfWork> BeginUnitOfWorkAsync(IReadModelStore store) => new(new InMemoryUnitOfWork());
}
