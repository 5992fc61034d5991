using Herald.Conformance.Sagas;
using Herald.Hosting;
using Microsoft.Extensions.DependencyInjection;

namespace Herald.Sqlite.Tests.Sagas;

/// <summary>Orchestrated sagas on SQLite files: the two hosts of a test (and those that replace a crashed one) open one file.</summary>
public sealed class SqliteSagaOrchestrationConformanceTests : SagaOrchestrationConformance, IDisposable
{
    private readonly OwnedFiles _files = new();

    protected override string NewStore() => _files.New();

    protected override void UseStore(HeraldBuilder herald, string store) => herald.UseSqlite(store);

    public void Dispose() => _files.Dispose();
}
