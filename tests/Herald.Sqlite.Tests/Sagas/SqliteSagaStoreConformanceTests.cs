using Herald.Conformance.Sagas;
using Herald.Persistence;
using Herald.Sagas;
using Herald.Sqlite.Reliability;
using Herald.Sqlite.Sagas;
using Herald.Sqlite.Tests.Reliability;

namespace Herald.Sqlite.Tests.Sagas;

/// <summary>The saga store contract on a SQLite file shared by the class's tests (each uses a saga name of its own).</summary>
public sealed class SqliteSagaStoreConformanceTests(ReliabilityFile file) : SagaStoreConformance, IClassFixture<ReliabilityFile>
{
    protected override ValueTask<ISagaStore> CreateStoreAsync(TimeProvider timeProvider) => ValueTask.FromResult<ISagaStore>(new SqliteSagaStore(file.Store, timeProvider));

    protected override ValueTask<IUnitOfWork> BeginUnitOfWorkAsync(ISagaStore store) => ValueTask.FromResult<IUnitOfWork>(file.Store.BeginUnitOfWork());
}
