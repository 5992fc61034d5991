using Herald.Conformance.Sagas;
using Herald.Persistence;
using Herald.Postgres.Sagas;
using Herald.Postgres.Tests.Reliability;
using Herald.Sagas;

namespace Herald.Postgres.Tests.Sagas;

/// <summary>The saga store contract on a PostgreSQL schema shared by the class's tests (each uses a saga name of its own).</summary>
public sealed class PostgresSagaStoreConformanceTests(ReliabilitySchema schema) : SagaStoreConformance, IClassFixture<ReliabilitySchema>
{
    protected override ValueTask<ISagaStore> CreateStoreAsync() => ValueTask.FromResult<ISagaStore>(new PostgresSagaStore(schema.Store));

    protected override ValueTask<IUnitOfWork> BeginUnitOfWorkAsync(ISagaStore store) => ValueTask.FromResult<IUnitOfWork>(schema.Store.BeginUnitOfWork());
}
