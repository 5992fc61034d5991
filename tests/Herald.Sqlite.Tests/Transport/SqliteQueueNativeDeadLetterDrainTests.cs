using Herald.Conformance.Transport;
using Herald.Hosting;
using Microsoft.Extensions.DependencyInjection;

namespace Herald.Sqlite.Tests.Transport;

/// <summary>The SQLite queue against <see cref="NativeDeadLetterDrainConformance"/>: its native dead letters are the herald_queue_dead_letters table.</summary>
public sealed class SqliteQueueNativeDeadLetterDrainTests : NativeDeadLetterDrainConformance, IDisposable
{
    private readonly TempDatabase _database = new();

    public void Dispose() => _database.Dispose();

    protected override void UseTransport(HeraldBuilder herald) =>
        herald.UseSqlite(_database.Path).UseSqliteQueue(_database.Path, o => o.PollInterval = TimeSpan.FromMilliseconds(100));

    protected override Task<long> CountNativeDeadLettersAsync(string queue) =>
        Task.FromResult((long)_database.Scalar($"SELECT COUNT(*) FROM herald_queue_dead_letters WHERE queue = '{queue}'")!);
}
