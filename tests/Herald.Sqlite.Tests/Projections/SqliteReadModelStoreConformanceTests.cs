using Herald.Conformance.Projections;
using Herald.EventSourcing;
using Herald.Persistence;
using Herald.Projections;
using Herald.Sqlite.Projections;
using Herald.Sqlite.Tests.Reliability;
using Xunit;

namespace Herald.Sqlite.Tests.Projections;

/// <summary>The read-model store contract on a SQLite file shared by the class's tests (each uses a table of its own).</summary>
public sealed class SqliteReadModelStoreConformanceTests(ReliabilityFile file) : ReadModelStoreConformance, IClassFixture<ReliabilityFile>
{
    protected override ValueTask<IReadModelStore> CreateStoreAsync() => ValueTask.FromResult<IReadModelStore>(new SqliteReadModelStore(file.Store));

    protected override ValueTask<(IEventStore Events, ICheckpointStore Checkpoints)> GetEventLogAsync(IReadModelStore store) => ValueTask.FromResult<(IEventStore, ICheckpointStore)>((file.Store, file.Store));

    protected override ValueTask<IUnitOfWork> BeginUnitOfWorkAsync(IReadModelStore store) => ValueTask.FromResult<IUnitOfWork>(file.Store.BeginUnitOfWork());

    [Fact]
    public async Task AChangeToTextThatIsNotJson_FailsTheUnitOfWork()
    {
        var store = new SqliteReadModelStore(file.Store);
        var table = UniqueTable();

        var unitOfWork = file.Store.BeginUnitOfWork();
        await Assert.ThrowsAnyAsync<Exception>(async () =>
        {
            await store.UpdateAsync(table, 1, "a", _ => "{not json", unitOfWork);
            await unitOfWork.CommitAsync();
        });
        await unitOfWork.RollbackAsync();

        Assert.Null(await store.GetAsync(table, "a"));
    }
}
