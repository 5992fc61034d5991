using System.Collections.Concurrent;
using System.Text;
using System.Text.Json;
using Herald.Conformance;
using Herald.Messages;
using Herald.Transport;
using Xunit.Abstractions;

namespace Herald.Kafka.Tests;

/// <summary>
/// A Node service on kafkajs and Herald share a topic on the same cluster (the mock's loopback brokers, or
/// HERALD_KAFKA_BOOTSTRAP): kafkajs reads what Herald wrote (CloudEvents headers, the partition key as the record key)
/// and Herald handles what kafkajs wrote. When node or kafkajs cannot be had here, the tests say so and check nothing.
/// </summary>
public sealed class InteropTests(ITestOutputHelper output) : KafkaTestBase
{
    [Fact]
    public async Task Kafkajs_ConsumesWhatHeraldSent_WithTheCloudEventsHeadersAndKey()
    {
        if (await NodeKafkajs.UnavailableAsync() is { } why)
        {
            output.WriteLine("Not run: " + why);
            return;
        }

        var queue = Name("to-node");
        var transport = await CreateTransportAsync();
        var sent = NewEnvelope("customer-9", """{"total":42}""") with { CorrelationId = "flow-1", Headers = new Dictionary<string, string> { ["tenant"] = "acme" } };
        await transport.SendAsync(queue, sent);

        var line = (await NodeKafkajs.RunAsync("consume", MockCluster.BootstrapServers, queue, Name("node-group"), "1")).Trim();
        using var record = JsonDocument.Parse(line);
        var headers = record.RootElement.GetProperty("headers");
        Assert.Equal("customer-9", record.RootElement.GetProperty("key").GetString());
        Assert.Equal("""{"total":42}""", record.RootElement.GetProperty("value").GetString());
        Assert.Equal(sent.MessageId.ToString(), headers.GetProperty("ce_id").GetString());
        Assert.Equal("kafka-test", headers.GetProperty("ce_type").GetString());
        Assert.Equal("1.0", headers.GetProperty("ce_specversion").GetString());
        Assert.Equal("flow-1", headers.GetProperty("ce_correlationid").GetString());
        Assert.Equal("acme", headers.GetProperty("ce_tenant").GetString());
        Assert.Equal("application/json", headers.GetProperty("content-type").GetString());
        Assert.True(DateTimeOffset.TryParse(headers.GetProperty("ce_time").GetString(), out _));
    }

    [Fact]
    public async Task Herald_HandlesWhatKafkajsProduced()
    {
        if (await NodeKafkajs.UnavailableAsync() is { } why)
        {
            output.WriteLine("Not run: " + why);
            return;
        }

        var queue = Name("from-node");
        var transport = await CreateTransportAsync();
        await transport.DeclareQueueAsync(queue);
        var received = new ConcurrentQueue<Envelope>();
        Own(await transport.ConsumeAsync(queue, ConsumerOptions.Default, (delivery, _) =>
        {
            Assert.Null(delivery.DecodeFailure);
            received.Enqueue(delivery.Envelope);
            return ValueTask.CompletedTask;
        }));

        var id = Guid.CreateVersion7();
        await NodeKafkajs.RunAsync("produce", MockCluster.BootstrapServers, queue, id.ToString(), "node-order", "customer-3", """{"total":7}""");
        await Eventually.UntilAsync(() => !received.IsEmpty, "the kafkajs record is consumed", TimeSpan.FromSeconds(30));

        var envelope = Assert.Single(received);
        Assert.Equal(id, envelope.MessageId);
        Assert.Equal("node-order", envelope.MessageType);
        Assert.Equal("customer-3", envelope.PartitionKey);
        Assert.Equal("/kafkajs", envelope.GetHeader(HeaderNames.Source));
        Assert.Equal("""{"total":7}""", Encoding.UTF8.GetString(envelope.Body.Span));
        Assert.Equal(1, envelope.DeliveryAttempt);
    }
    [Fact]
    public async Task AKeyHeraldSends_LandsOnThePartitionKafkajsAndTheJavaClientPickForIt()
    {
        if (await NodeKafkajs.UnavailableAsync() is { } why)
        {
            output.WriteLine("Not run: " + why);
            return;
        }

        // Producers of one topic in other languages (the Java client, Kafka Streams, Connect, kafkajs) place a key by
        // murmur2: Herald must place it alike, or a key written from both sides is split over two partitions, out of order.
        var queue = Name("shared-keys");
        var transport = await CreateTransportAsync(o => o.TopicPartitions = 12);
        await transport.DeclareQueueAsync(queue);
        string[] keys = [.. Enumerable.Range(0, 16).Select(i => $"customer-{i}"), "ключ", "a-little-bit-longer-key-of-an-order-7f3c"];
        await NodeKafkajs.RunAsync(["produce-keys", MockCluster.BootstrapServers, queue, .. keys]);
        foreach (var key in keys)
        {
            await transport.SendAsync(queue, NewEnvelope(key));
        }

        var lines = (await NodeKafkajs.RunAsync("consume", MockCluster.BootstrapServers, queue, Name("node-group"), (keys.Length * 2).ToString(System.Globalization.CultureInfo.InvariantCulture)))
            .Split('\n', StringSplitOptions.RemoveEmptyEntries);
        var placed = lines
            .Select(line => JsonDocument.Parse(line).RootElement)
            .Select(r => (Key: r.GetProperty("key").GetString() ?? "", Partition: r.GetProperty("partition").GetInt32(), FromNode: r.GetProperty("headers").TryGetProperty("ce_source", out var source) && source.GetString() == "/kafkajs"))
            .ToList();
        Assert.Equal(keys.Length * 2, placed.Count);
        Assert.True(placed.Select(p => p.Partition).Distinct().Count() > 1, "the keys spread over more than one partition");
        foreach (var key in keys)
        {
            var partitions = placed.Where(p => p.Key == key).OrderBy(p => p.FromNode).Select(p => p.Partition).ToList();
            Assert.True(partitions.Count == 2 && partitions[0] == partitions[1], $"key '{key}': Herald put it on partition {partitions[0]}, kafkajs on {partitions[^1]}");
        }
    }
}
