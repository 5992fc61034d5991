using Herald.Conformance.Transport;
using Herald.Kafka.Transport;
using Herald.Transport;
using Xunit.Abstractions;

namespace Herald.Kafka.Tests;

/// <summary>
/// Runs the transport conformance suite against the mock cluster (or HERALD_KAFKA_BOOTSTRAP). Where Kafka differs the
/// capability flags say so: no per-message delay (SupportsDelayedDelivery is false; delayed nacks go through a retry
/// topic, read in order), and competing consumers share a queue by partition, so at most as many consumers of one queue
/// do work as its topic has partitions (4 on the mock, 3 consumers in the suite). The connection-kill test does not apply:
/// librdkafka reconnects inside the client, and the mock's brokers cannot drop one client's connections alone.
/// </summary>
public sealed class KafkaTransportConformanceTests(ITestOutputHelper output) : TransportConformance(output)
{
    protected override async Task<ITransport> CreateTransportAsync() =>
        await KafkaTransportFactory.CreateAsync(KafkaTestBase.TestOptions());
}
