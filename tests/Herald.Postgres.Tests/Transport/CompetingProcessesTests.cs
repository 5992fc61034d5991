using Herald.Processes;
using Herald.Postgres.Transport;
using Herald.Conformance.Transport.Processes;
using Herald.Transport;
using Xunit.Abstractions;

namespace Herald.Postgres.Tests.Transport;

/// <summary>Two consumer processes on one queue of a fresh schema (issue 5).</summary>
public sealed class CompetingProcessesTests(ITestOutputHelper output) : CompetingProcessesConformance(output)
{
    private readonly TemporarySchema _schema = new();

    // An ack returns once its DELETE committed: only what the killed process completed without its ack returning repeats.
    protected override bool AcksConfirmed => true;

    // A 3 s lease, which it renews while it lives and nothing releases once it is dead.
    protected override IReadOnlyList<string> KilledProcessOptions => ["--lease-ms", "3000"];

    public override async Task DisposeAsync() => await _schema.DisposeAsync();

    protected override Task<ITransport> CreateSenderAsync() =>
        PostgresQueueTransportFactory.CreateAsync(PostgresTestDatabase.ConnectionString, o => o.Schema = _schema.Name);

    // Sends wake consumers through NOTIFY, but nothing announces an expired lease: both poll every 100 ms, so the survivor
    // notices one soon even once the queue runs dry.
    protected override Task<ConsumerChildProcess> StartChildAsync(string name, string queue, IReadOnlyList<string> options) =>
        ConsumerChildProcess.StartAsync(
            name, "postgres", PostgresTestDatabase.ConnectionString, queue,
            ["--schema", _schema.Name, "--concurrency", Number(Concurrency), "--poll-ms", "100", .. options]);
}
