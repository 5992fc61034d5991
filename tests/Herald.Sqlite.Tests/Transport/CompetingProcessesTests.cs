using Herald.Processes;
using Herald.Sqlite.Transport;
using Herald.Conformance.Transport.Processes;
using Herald.Transport;
using Xunit.Abstractions;

namespace Herald.Sqlite.Tests.Transport;

/// <summary>Two consumer processes on one queue of one database file (issue 5).</summary>
public sealed class CompetingProcessesTests(ITestOutputHelper output) : CompetingProcessesConformance(output)
{
    private readonly TempDatabase _database = new();

    // An ack returns once the row is deleted: only what the killed process completed without its ack returning repeats.
    protected override bool AcksConfirmed => true;

    // A 3 s lease, which it renews while it lives and nothing releases once it is dead.
    protected override IReadOnlyList<string> KilledProcessOptions => ["--lease-ms", "3000"];

    public override Task DisposeAsync()
    {
        _database.Dispose();
        return Task.CompletedTask;
    }

    protected override Task<ITransport> CreateSenderAsync() => SqliteQueueTransportFactory.OpenAsync(_database.Path);

    // Both poll every 100 ms: nothing announces an expired lease, so it is noticed soon even once the queue runs dry.
    protected override Task<ConsumerChildProcess> StartChildAsync(string name, string queue, IReadOnlyList<string> options) =>
        ConsumerChildProcess.StartAsync(name, "sqlite", _database.Path, queue, ["--concurrency", Number(Concurrency), "--poll-ms", "100", .. options]);
}
