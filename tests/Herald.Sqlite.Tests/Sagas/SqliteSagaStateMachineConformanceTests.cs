using Herald.Conformance.Sagas;
using Herald.Hosting;
using Microsoft.Extensions.DependencyInjection;

namespace Herald.Sqlite.Tests.Sagas;

/// <summary>State-machine sagas on SQLite files: the hosts of one test (a restart, a second consumer) open one file.</summary>
public sealed class SqliteSagaStateMachineConformanceTests : SagaStateMachineConformance, IDisposable
{
    private readonly List<TempDatabase> _files = [];

    protected override string NewStore()
    {
        var file = new TempDatabase();
        _files.Add(file);
        return file.Path;
    }

    protected override void UseStore(HeraldBuilder herald, string store) => herald.UseSqlite(store);

    public void Dispose()
    {
        foreach (var file in _files)
        {
            file.Dispose();
        }
    }
}
