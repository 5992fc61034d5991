using System.Globalization;
using System.Text;
using System.Text.Json;
using Confluent.Kafka;
using Herald.Benchmarks.Harness;
using Herald.Kafka.Tests;
using Herald.Kafka.Transport;
using Herald.Messages;
using Herald.Transport;

namespace Herald.Benchmarks.Kafka;

/// <summary>
/// Kafka (issue 14): publish and consume of 300-byte messages through Herald.Kafka and through the raw Confluent.Kafka
/// client with like-for-like settings (idempotent producer, acks=all, 64 sends in flight; a consumer group with manual
/// commits every 500 ms of what was handled, the client's default fetch settings, every handler deserializing the body and
/// the raw one checking the record's type header first), on librdkafka's mock cluster (or HERALD_BENCH_KAFKA). Each consume
/// measurement runs from creating the consumer to the last record handled; the last commit and leaving the group come after
/// it on both sides (Herald's consumer is stopped after the measurement, the raw one commits and closes after it too).
/// The mock runs inside this process, so its CPU is in this process's figures, and its numbers say nothing of a real
/// cluster's: only the ratio between the two contenders on the same mock means anything.
/// </summary>
internal sealed class KafkaBenchmark : IBenchmark
{
    private const int InFlight = 64;
    private static readonly byte[] Body = JsonSerializer.SerializeToUtf8Bytes(new Payload("order-" + new string('x', 240), 42, 19.99m));

    public string Name => "kafka";

    public string Description => "Kafka: publish (64 in flight) and consume (group, manual commits) of 300-byte messages: Herald vs raw Confluent.Kafka on the mock cluster";

    public async Task RunAsync(BenchmarkArgs args, CancellationToken cancellationToken)
    {
        var repeat = args.Repeat ?? (args.Quick ? 1 : 3);
        var count = args.Quick ? 2_000 : 20_000;
        var bootstrap = Environment.GetEnvironmentVariable("HERALD_BENCH_KAFKA") is { Length: > 0 } b ? b : MockCluster.BootstrapServers;
        Console.WriteLine($"kafka: {(args.Quick ? "quick" : "full")} run, {repeat} round(s) of {count:N0} messages, brokers {bootstrap}");

        var contenders = new (string Name, Func<string, int, Task<(Measurement Publish, Measurement Consume, double Steady)>> Run)[]
        {
            ("herald", (topic, n) => RunHeraldAsync(bootstrap, topic, n, cancellationToken)),
            ("raw", (topic, n) => RunRawAsync(bootstrap, topic, n, cancellationToken)),
        }.Where(c => args.Includes(c.Name)).ToList();

        // Three warm-up rounds: each new consumer brings code the JIT has not seen, which postpones tiering up (both sides alike).
        Console.WriteLine("  warm-up");
        for (var warm = 0; warm < 3; warm++)
        {
            foreach (var (name, run) in contenders)
            {
                await run(Topic(name), Math.Min(count, 2_000));
            }
        }

        var publish = contenders.ToDictionary(c => c.Name, _ => new List<Measurement>());
        var consume = contenders.ToDictionary(c => c.Name, _ => new List<Measurement>());
        var steady = contenders.ToDictionary(c => c.Name, _ => new List<double>());
        for (var round = 1; round <= repeat; round++)
        {
            Console.Write($"    round {round}:");
            foreach (var (name, run) in contenders)
            {
                var (p, c, rate) = await run(Topic(name), count);
                publish[name].Add(p);
                consume[name].Add(c);
                steady[name].Add(rate);
                Console.Write($" {name} {p.MessagesPerSecond:N0}/{c.MessagesPerSecond:N0} ({rate:N0} after the first) msg/s");
            }

            Console.WriteLine();
        }

        var table = new MarkdownTable("contender", "phase", "msg/s (median)", "range", "msg/s after the first record (median)", "CPU µs/msg", "bytes/msg");
        foreach (var (phase, series) in new[] { ("publish", publish), ("consume", consume) })
        {
            foreach (var (name, runs) in series)
            {
                var s = new MeasurementSeries(name, phase, runs);
                table.Add(name, phase, s.MessagesPerSecond.ToString("N0", CultureInfo.InvariantCulture),
                    $"{s.MinMessagesPerSecond:N0}-{s.MaxMessagesPerSecond:N0}",
                    phase == "consume" ? Median(steady[name]).ToString("N0", CultureInfo.InvariantCulture) : "",
                    s.CpuMicrosecondsPerMessage.ToString("N1", CultureInfo.InvariantCulture),
                    s.BytesPerMessage.ToString("N0", CultureInfo.InvariantCulture));
            }
        }

        var text = new StringBuilder(args.Heading(Name));
        text.AppendLine().AppendLine(table.ToString());
        if (publish.ContainsKey("herald") && publish.ContainsKey("raw"))
        {
            double Ratio(Dictionary<string, List<Measurement>> phase, string name) =>
                new MeasurementSeries("herald", name, phase["herald"]).MessagesPerSecond / new MeasurementSeries("raw", name, phase["raw"]).MessagesPerSecond;
            var steadyRatio = Median(steady["herald"]) / Median(steady["raw"]);

            // The headline for consume is the per-record rate: the whole phase also holds the start-up, where Herald skips the
            // bare client's reset back-off (see below), which is not the same work.
            text.AppendLine().AppendLine(string.Create(CultureInfo.InvariantCulture,
                $"Herald / raw Confluent.Kafka (target: at least 0.9x): publish {Ratio(publish, "publish"):0.00}x; consume {steadyRatio:0.00}x from the first record handled to the last "
                + $"(per round: {string.Join(" ", steady["herald"].Zip(steady["raw"], (h, r) => (h / r).ToString("0.00", CultureInfo.InvariantCulture) + "x"))}), "
                + $"the like-for-like rate with start-up and group join left out on both sides; {Ratio(consume, "consume"):0.00}x from creating the consumer to the last record."));
        }

        text.AppendLine().AppendLine("The mock cluster runs in this process: its work is in the CPU column of both contenders alike.");
        text.AppendLine().AppendLine(
            "Like for like: both consumers commit by hand every 500 ms what was handled, with the client's default fetch settings; "
            + "both decode every body, and the raw one reads the record's ce_type header to know what it is (Herald reads every "
            + "CloudEvents attribute into the envelope). Herald hands records from its poll thread to a worker and also starts its "
            + "retry-topic relay; the raw loop handles records on its poll thread. The last commit and leaving the group are outside "
            + "both measurements. Each group is new, so its partitions have no committed offset: Herald tells the client where they "
            + "start when they are assigned, while the bare client looks that up itself after librdkafka's 100 ms back-off, which is "
            + "in the raw consume time (a large share of a quick run's); the rate after the first record and CPU µs/msg are the per-record comparison.");
        ResultsFile.Publish(args, Name, text.ToString());
    }

    private static double Median(List<double> values)
    {
        var sorted = values.Order().ToList();
        return sorted.Count % 2 == 1 ? sorted[sorted.Count / 2] : (sorted[(sorted.Count / 2) - 1] + sorted[sorted.Count / 2]) / 2;
    }

    /// <summary>Messages per second between the first record handled and the last (timestamps of <see cref="System.Diagnostics.Stopwatch"/>).</summary>
    private static double Steady(int count, long first, long last) =>
        (count - 1) / System.Diagnostics.Stopwatch.GetElapsedTime(first, last).TotalSeconds;

    private static string Topic(string contender) => $"bench-{contender}-{Guid.NewGuid():N}";

    private static async Task<(Measurement, Measurement, double)> RunHeraldAsync(string bootstrap, string queue, int count, CancellationToken cancellationToken)
    {
        await using var transport = await KafkaTransportFactory.CreateAsync(Options(bootstrap), cancellationToken: cancellationToken);
        await transport.DeclareQueueAsync(queue, cancellationToken);
        var publish = await Measurement.TakeAsync(count, () => ForEachInFlightAsync(count, _ =>
            transport.SendAsync(queue, new Envelope { MessageId = Guid.CreateVersion7(), MessageType = "bench-order", Time = DateTimeOffset.UtcNow, Body = Body }, cancellationToken: cancellationToken)));

        var handled = 0;
        long first = 0, last = 0;
        var done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        ITransportConsumer? consumer = null;
        var consume = await Measurement.TakeAsync(count, async () =>
        {
            consumer = await transport.ConsumeAsync(queue, new ConsumerOptions { MaxConcurrency = 1, Prefetch = 500 }, (delivery, ct) =>
            {
                _ = JsonSerializer.Deserialize<Payload>(delivery.Envelope.Body.Span);
                var n = Interlocked.Increment(ref handled);
                if (n == 1)
                {
                    first = System.Diagnostics.Stopwatch.GetTimestamp();
                }

                if (n == count)
                {
                    last = System.Diagnostics.Stopwatch.GetTimestamp();
                    done.TrySetResult();
                }

                return ValueTask.CompletedTask;
            }, cancellationToken);
            await done.Task.WaitAsync(TimeSpan.FromMinutes(5), cancellationToken);
        });
        await consumer!.DisposeAsync();
        return (publish, consume, Steady(count, first, last));
    }

    private static async Task<(Measurement, Measurement, double)> RunRawAsync(string bootstrap, string topic, int count, CancellationToken cancellationToken)
    {
        var options = Options(bootstrap);
        using var producer = new ProducerBuilder<byte[]?, byte[]>(new ProducerConfig { BootstrapServers = bootstrap, EnableIdempotence = true, Acks = Acks.All }).Build();
        using (var admin = new DependentAdminClientBuilder(producer.Handle).Build())
        {
            // The same topic set-up as Herald's: created by a metadata request on the mock.
            admin.GetMetadata(topic, TimeSpan.FromSeconds(10));
        }

        var publish = await Measurement.TakeAsync(count, () => ForEachInFlightAsync(count, async _ =>
        {
            // Like for like: Herald's CloudEvents headers too, so the wire carries the same bytes.
            var headers = new Headers
            {
                { "ce_specversion", "1.0"u8.ToArray() },
                { "ce_id", Encoding.UTF8.GetBytes(Guid.CreateVersion7().ToString()) },
                { "ce_type", "bench-order"u8.ToArray() },
                { "ce_source", "/herald"u8.ToArray() },
                { "ce_time", Encoding.UTF8.GetBytes(DateTimeOffset.UtcNow.ToString("yyyy-MM-dd'T'HH:mm:ss.fff'Z'", CultureInfo.InvariantCulture)) },
                { "content-type", "application/json"u8.ToArray() },
            };
            await producer.ProduceAsync(topic, new Message<byte[]?, byte[]> { Value = Body, Headers = headers }, cancellationToken);
        }));

        var config = new ConsumerConfig
        {
            BootstrapServers = bootstrap,
            GroupId = topic,
            EnableAutoCommit = false,
            AutoOffsetReset = AutoOffsetReset.Earliest,
        };
        if (options.GroupProtocol == KafkaGroupProtocol.Consumer)
        {
            config.Set("group.protocol", "consumer");
        }
        else
        {
            config.PartitionAssignmentStrategy = PartitionAssignmentStrategy.CooperativeSticky;
        }

        IConsumer<byte[]?, byte[]>? consumer = null;
        var offsets = new Dictionary<TopicPartition, TopicPartitionOffset>();
        long first = 0, last = 0;
        var consume = await Measurement.TakeAsync(count, () => Task.Run(() =>
        {
            consumer = new ConsumerBuilder<byte[]?, byte[]>(config).Build();
            consumer.Subscribe(topic);
            var handled = 0;
            var lastCommit = Environment.TickCount64;
            while (handled < count)
            {
                var result = consumer.Consume(TimeSpan.FromMilliseconds(100));
                if (result?.Message is null)
                {
                    continue;
                }

                // What a user of the bare client does at the least to know what a record is before decoding it.
                if (!result.Message.Headers.TryGetLastBytes("ce_type", out var type) || !type.AsSpan().SequenceEqual("bench-order"u8))
                {
                    throw new InvalidOperationException($"Record {result.TopicPartitionOffset} is not a bench-order.");
                }

                _ = JsonSerializer.Deserialize<Payload>(result.Message.Value);
                offsets[result.TopicPartition] = new TopicPartitionOffset(result.TopicPartition, result.Offset + 1);
                if (++handled == 1)
                {
                    first = System.Diagnostics.Stopwatch.GetTimestamp();
                }

                if (Environment.TickCount64 - lastCommit >= 500)
                {
                    consumer.Commit(offsets.Values);
                    lastCommit = Environment.TickCount64;
                }
            }

            last = System.Diagnostics.Stopwatch.GetTimestamp();
        }, cancellationToken));

        // Outside the measurement, as Herald's consumer is stopped outside its own: the last commit and leaving the group.
        consumer!.Commit(offsets.Values);
        consumer.Close();
        consumer.Dispose();
        return (publish, consume, Steady(count, first, last));
    }

    private static KafkaTransportOptions Options(string bootstrap) => new()
    {
        BootstrapServers = bootstrap,
        GroupProtocol = MockCluster.IsMock ? KafkaGroupProtocol.Consumer : KafkaGroupProtocol.Classic,
        CreateTopics = !MockCluster.IsMock,
        CommitInterval = TimeSpan.FromMilliseconds(500),
    };

    /// <summary>Runs <paramref name="send"/> <paramref name="count"/> times with <see cref="InFlight"/> calls outstanding at once.</summary>
    private static async Task ForEachInFlightAsync(int count, Func<int, ValueTask> send)
    {
        var next = -1;
        await Task.WhenAll(Enumerable.Range(0, InFlight).Select(async _ =>
        {
            int i;
            while ((i = Interlocked.Increment(ref next)) < count)
            {
                await send(i);
            }
        }));
    }

    private sealed record Payload(string Sku, int Quantity, decimal Price);
}
