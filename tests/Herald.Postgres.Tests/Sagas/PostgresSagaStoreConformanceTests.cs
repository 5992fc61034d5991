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

    [Fact]
    public async Task Save_OfAKeyHoldingU0000_IsRefusedNamingIt()
    {
        // PostgreSQL's text cannot hold it: the save failed with a bare 22021.
        var store = new PostgresSagaStore(schema.Store);

        var id = await Assert.ThrowsAsync<ArgumentException>(async () => await store.SaveAsync(NewInstance(UniqueSaga(), "order-1\0")));
        var name = await Assert.ThrowsAsync<ArgumentException>(async () => await store.SaveAsync(NewInstance(UniqueSaga() + "\0"), schema.Store.BeginUnitOfWork()));

        Assert.Contains("saga instance id 'order-1\\u0000' holds the character U+0000", id.Message, StringComparison.Ordinal);
        Assert.Contains("saga name", name.Message, StringComparison.Ordinal);
    }
}
