using Herald.Conformance.Sagas;
using Herald.Persistence;
using Herald.Sagas;

namespace Herald.Tests.Sagas;

/// <summary>The saga store contract on the in-memory store.</summary>
public sealed class InMemorySagaStoreConformanceTests : SagaStoreConformance
{
    protected override ValueTask<ISagaStore> CreateStoreAsync(TimeProvider timeProvider) => ValueTask.FromResult<ISagaStore>(new InMemorySagaStore(timeProvider));

    protected override ValueTask<IUnitOfWork> BeginUnitOfWorkAsync(ISagaStore store) => ValueTask.FromResult<IUnitOfWork>(new InMemoryUnitOfWork());
}
