using System.Text;
using Confluent.Kafka;
using Herald.Kafka.Transport;
using Herald.Messages;
using Herald.Transport;

namespace Herald.Kafka.Tests;

/// <summary>Creates transports on the cluster under test with test-friendly settings, and disposes them after the test.</summary>
public abstract class KafkaTestBase : IAsyncLifetime
{
    private readonly List<IAsyncDisposable> _owned = [];

    /// <summary>The options every test transport starts from: the KIP-848 protocol on the mock (fast rebalances).</summary>
    internal static KafkaTransportOptions TestOptions(Action<KafkaTransportOptions>? configure = null)
    {
        var options = new KafkaTransportOptions();
        ApplyTestOptions(options);
        configure?.Invoke(options);
        return options;
    }

    /// <summary>Sets what every test transport uses (also on a host's options through UseKafka).</summary>
    internal static void ApplyTestOptions(KafkaTransportOptions options)
    {
        options.BootstrapServers = MockCluster.BootstrapServers;
        options.GroupProtocol = MockCluster.IsMock ? KafkaGroupProtocol.Consumer : KafkaGroupProtocol.Classic;

        // The mock has no CreateTopics; it creates a topic (4 partitions) on the first metadata request for it.
        options.CreateTopics = !MockCluster.IsMock;
        options.TopicPartitions = 4;
        options.ReplicationFactor = MockCluster.IsMock ? (short)-1 : (short)1;
        options.CommitInterval = TimeSpan.FromMilliseconds(100);
        options.RevocationTimeout = TimeSpan.FromSeconds(10);
    }

    /// <summary>Where the transports' log goes: the test output when a test class sets it.</summary>
    internal Microsoft.Extensions.Logging.ILoggerFactory? LoggerFactory { get; set; }

    internal async Task<KafkaTransport> CreateTransportAsync(Action<KafkaTransportOptions>? configure = null, TimeProvider? clock = null)
    {
        var transport = (KafkaTransport)await KafkaTransportFactory.CreateAsync(TestOptions(configure), clock, LoggerFactory);
        _owned.Add(transport);
        return transport;
    }

    internal T Own<T>(T disposable)
        where T : IAsyncDisposable
    {
        _owned.Add(disposable);
        return disposable;
    }

    internal static string Name(string purpose) => $"herald-{purpose}-{Guid.NewGuid():N}";

    internal static Envelope NewEnvelope(string? key = null, string body = "{}") => new()
    {
        MessageId = Guid.CreateVersion7(),
        MessageType = "kafka-test",
        Time = DateTimeOffset.UtcNow,
        PartitionKey = key,
        Body = Encoding.UTF8.GetBytes(body),
    };

    /// <summary>A raw producer, to write records behind Herald's back.</summary>
    internal static IProducer<byte[]?, byte[]> RawProducer() =>
        new ProducerBuilder<byte[]?, byte[]>(new ProducerConfig { BootstrapServers = MockCluster.BootstrapServers, Acks = Acks.All }).Build();

    /// <summary>The sum of the log end offsets of a topic's partitions (how many records it ever held).</summary>
    internal static long EndOffsets(string topic)
    {
        using var admin = new AdminClientBuilder(new AdminClientConfig { BootstrapServers = MockCluster.BootstrapServers }).Build();
        using var consumer = new ConsumerBuilder<byte[]?, byte[]>(new ConsumerConfig { BootstrapServers = MockCluster.BootstrapServers, GroupId = "herald-tests-probe" }).Build();
        var metadata = admin.GetMetadata(topic, TimeSpan.FromSeconds(10));
        return metadata.Topics.Single().Partitions.Sum(p => consumer.QueryWatermarkOffsets(new TopicPartition(topic, p.PartitionId), TimeSpan.FromSeconds(10)).High.Value);
    }

    /// <summary>Records of a topic not yet committed by a group: log end minus committed, summed over partitions.</summary>
    internal static long Uncommitted(string topic, string groupId)
    {
        using var admin = new AdminClientBuilder(new AdminClientConfig { BootstrapServers = MockCluster.BootstrapServers }).Build();
        using var consumer = new ConsumerBuilder<byte[]?, byte[]>(new ConsumerConfig { BootstrapServers = MockCluster.BootstrapServers, GroupId = groupId }).Build();
        var partitions = admin.GetMetadata(topic, TimeSpan.FromSeconds(10)).Topics.Single().Partitions.Select(p => new TopicPartition(topic, p.PartitionId)).ToList();
        return consumer.Committed(partitions, TimeSpan.FromSeconds(10)).Sum(c =>
        {
            var marks = consumer.QueryWatermarkOffsets(c.TopicPartition, TimeSpan.FromSeconds(10));
            return marks.High.Value - (c.Offset == Offset.Unset ? marks.Low.Value : c.Offset.Value);
        });
    }

    public Task InitializeAsync() => Task.CompletedTask;

    /// <summary>
    /// Disposes what the test owns, each within a minute: a dispose that never returns (a client's close that hangs) fails
    /// the test naming what hung, instead of holding the whole test run until its hang timeout.
    /// </summary>
    public virtual async Task DisposeAsync()
    {
        for (var i = _owned.Count - 1; i >= 0; i--)
        {
            try
            {
                await _owned[i].DisposeAsync().AsTask().WaitAsync(TimeSpan.FromMinutes(1));
            }
            catch (TimeoutException e)
            {
                throw new TimeoutException($"Disposing the test's {_owned[i].GetType().Name} (#{i}) did not return within a minute.", e);
            }
        }
    }
}
