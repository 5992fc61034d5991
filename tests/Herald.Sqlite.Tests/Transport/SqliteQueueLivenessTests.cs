using Herald.Conformance.Transport;
using Herald.Hosting;
using Microsoft.Extensions.DependencyInjection;

namespace Herald.Sqlite.Tests.Transport;

/// <summary>The SQLite queue against <see cref="LivenessConformance"/>.</summary>
public sealed class SqliteQueueLivenessTests : LivenessConformance, IDisposable
{
    private readonly TempDatabase _database = new();

    public void Dispose() => _database.Dispose();

    protected override void UseTransport(HeraldBuilder herald) =>
        herald.UseSqlite(_database.Path).UseSqliteQueue(_database.Path, o => o.PollInterval = TimeSpan.FromMilliseconds(100));
}
