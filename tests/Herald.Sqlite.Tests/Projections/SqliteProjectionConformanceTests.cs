using Herald.Conformance.Projections;
using Herald.Hosting;
using Microsoft.Extensions.DependencyInjection;

namespace Herald.Sqlite.Tests.Projections;

/// <summary>
/// The projection contract on SQLite files: the hosts of one test open one file and elect their runners with
/// <c>UseSqlite</c>'s own election (a lock file per projection), as processes sharing the file do.
/// </summary>
public sealed class SqliteProjectionConformanceTests : ProjectionConformance, IDisposable
{
    private readonly OwnedFiles _files = new();

    protected override string NewStore() => _files.New();

    protected override void UseStore(HeraldBuilder herald, string store) => herald.UseSqlite(store);

    public void Dispose() => _files.Dispose();
}
