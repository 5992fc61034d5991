using Herald.RabbitMQ.Transport;
using Herald.Processes;
using Herald.Conformance.Transport.Processes;
using Herald.Transport;
using Xunit.Abstractions;

namespace Herald.RabbitMQ.Tests;

/// <summary>Two consumer processes, each with a connection of its own, on one queue of the test broker (issue 5).</summary>
public sealed class CompetingProcessesTests(ITestOutputHelper output) : CompetingProcessesConformance(output)
{
    private readonly string _prefix = $"herald-test-{Guid.NewGuid():N}"[..24];

    protected override int Messages => 5_000;

    // basic.ack has no reply, so even a returned ack may not have reached the broker before the kill: any completion of
    // the killed process may repeat (in practice, the held messages), and nothing else may.
    protected override bool AcksConfirmed => false;

    public override Task DisposeAsync() => BrokerAdmin.DeleteAllAsync(_prefix);

    protected override string QueueName(string what) => $"{_prefix}-{what}";

    protected override Task<ITransport> CreateSenderAsync() =>
        RabbitMqTransportFactory.CreateAsync(new RabbitMqTransportOptions { ConnectionUri = BrokerAdmin.AmqpUri, ClientProvidedName = _prefix });

    // The broker requeues what the killed process had not acked when its connection closes.
    protected override Task<ConsumerChildProcess> StartChildAsync(string name, string queue, IReadOnlyList<string> options) =>
        ConsumerChildProcess.StartAsync(name, "rabbitmq", BrokerAdmin.AmqpUri.ToString(), queue, ["--concurrency", Number(Concurrency), .. options]);
}
