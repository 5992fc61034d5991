using Herald.Conformance.Projections;
using Herald.Hosting;
using Herald.Persistence;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;

namespace Herald.Sqlite.Tests.Projections;

/// <summary>
/// The projection contract on SQLite files: the hosts of one test open one file. A file serves one process, whose leader
/// election is in process, so the hosts of a test share one, as the parts of one process would.
/// </summary>
public sealed class SqliteProjectionConformanceTests : ProjectionConformance, IDisposable
{
    private readonly Dictionary<string, (TempDatabase File, InProcessLeaderElection Election)> _stores = [];

    protected override string NewStore()
    {
        var file = new TempDatabase();
        _stores[file.Path] = (file, new InProcessLeaderElection());
        return file.Path;
    }

    protected override void UseStore(HeraldBuilder herald, string store)
    {
        herald.UseSqlite(store);
        herald.Services.Replace(ServiceDescriptor.Singleton<ILeaderElection>(_stores[store].Election));
    }

    public void Dispose()
    {
        foreach (var (file, _) in _stores.Values)
        {
            file.Dispose();
        }
    }
}
