using Herald.Conformance.Transport.Processes;
using Herald.Processes;
using Herald.Transport;
using Xunit.Abstractions;

namespace Herald.Kafka.Tests;

/// <summary>
/// Two consumer processes in one consumer group on one topic (issue 14): Herald.Transport.ConsumerChild processes reach
/// the mock cluster, which lives in this test process, through its loopback brokers, as kafkajs does in InteropTests.
/// A killed member's partitions go to the survivor once the mock's session timeout (MockCluster.ConsumerSessionTimeout)
/// has passed, and the survivor resumes them from the group's committed offsets.
/// </summary>
public sealed class CompetingProcessesTests(ITestOutputHelper output) : CompetingProcessesConformance(output)
{
    // Offsets are committed in the background (every 100 ms in the child), after the ack returned: whatever the killed
    // process completed past its partitions' last commit is read again by the survivor, not only what it held.
    protected override bool AcksConfirmed => false;

    protected override string QueueName(string what) => KafkaTestBase.Name(what);

    protected override async Task<ITransport> CreateSenderAsync() =>
        await Herald.Kafka.Transport.KafkaTransportFactory.CreateAsync(KafkaTestBase.TestOptions());

    protected override Task<ConsumerChildProcess> StartChildAsync(string name, string queue, IReadOnlyList<string> options) =>
        ConsumerChildProcess.StartAsync(
            name, "kafka", MockCluster.BootstrapServers, queue, ["--concurrency", Number(Concurrency), .. MockCluster.IsMock ? ["--kafka-mock"] : Array.Empty<string>(), .. options]);
}
