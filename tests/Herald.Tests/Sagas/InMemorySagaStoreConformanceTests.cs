using Herald.Conformance.Sagas;
using Herald.Persistence;
using Herald.Sagas;

namespace Herald.Tests.Sagas;

/// <summary>The saga store contract on the in-memory store.</summary>
public sealed class InMemorySagaStoreConformanceTests : SagaStoreConformance
{
    protected override ValueTask<ISagaStore> CreateStoreAsync() => ValueTask.FromResult<ISagaStore>(new InMemorySagaStore());

    protected override ValueTask<IUnitOfWork> BeginUnitOfWorkAsync(ISagaStore store) => ValueTask.FromResult<IUnitOfWork>(new InMemoryUnitOfWork());
}
