using Herald.Conformance.Transport.Processes;
using Herald.Nats.Transport;
using Herald.Processes;
using Herald.Transport;
using Xunit.Abstractions;

namespace Herald.Nats.Tests;

/// <summary>Two consumer processes, each with a connection of its own, on one durable consumer of the test server (issue 13).</summary>
public sealed class CompetingProcessesTests(ITestOutputHelper output) : CompetingProcessesConformance(output)
{
    private readonly string _prefix = $"ht-{Guid.NewGuid():N}"[..20];

    // An ack has no reply unless asked for (double ack), so any completion of the killed process may repeat.
    protected override bool AcksConfirmed => false;

    // JetStream does not hand back a dead connection's messages when it drops: they come back after the ack wait.
    protected override IReadOnlyList<string> KilledProcessOptions => ["--lease-ms", "2000"];

    public override Task DisposeAsync() => NatsServer.DeleteStreamsAsync("HERALD_Q_" + _prefix);

    protected override string QueueName(string what) => $"{_prefix}-{what}";

    protected override Task<ITransport> CreateSenderAsync() =>
        NatsTransportFactory.CreateAsync(new NatsTransportOptions { Url = NatsServer.Url, ClientName = _prefix });

    protected override Task<ConsumerChildProcess> StartChildAsync(string name, string queue, IReadOnlyList<string> options) =>
        ConsumerChildProcess.StartAsync(name, "nats", NatsServer.Url, queue, ["--concurrency", Number(Concurrency), .. options]);
}
