using Herald.Conformance.Sagas;
using Herald.Hosting;
using Microsoft.Extensions.DependencyInjection;

namespace Herald.Sqlite.Tests.Sagas;

/// <summary>State-machine sagas on SQLite files: the hosts of one test (a restart, a second consumer) open one file.</summary>
public sealed class SqliteSagaStateMachineConformanceTests : SagaStateMachineConformance, IDisposable
{
    private readonly OwnedFiles _files = new();

    protected override string NewStore() => _files.New();

    protected override void UseStore(HeraldBuilder herald, string store) => herald.UseSqlite(store);

    public void Dispose() => _files.Dispose();
}
