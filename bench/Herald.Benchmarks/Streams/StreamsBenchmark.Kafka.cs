using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using Confluent.Kafka;
using Herald.Kafka.Tests;
using Herald.Kafka.Transport;
using Herald.Messages;
using Herald.Streams;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Streamiz.Kafka.Net;
using Streamiz.Kafka.Net.SerDes;
using Streamiz.Kafka.Net.Stream;
using Streamiz.Kafka.Net.Table;
using StreamizWindowed = Streamiz.Kafka.Net.State.Windowed<string>;

namespace Herald.Benchmarks.Streams;

/// <summary>
/// The Kafka rows: the same windowed aggregation by Streamiz.Kafka.Net and by Herald's transport-source stream, each from
/// the start of its client to the last closed window, over one topic (one partition, records keyed by product) filled
/// beforehand on librdkafka's mock cluster (or the cluster HERALD_KAFKA_BOOTSTRAP names).
/// </summary>
internal sealed partial class StreamsBenchmark
{
    private static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web);

    /// <summary>Fills a new one-partition topic with the events as Herald sends them (CloudEvents headers, key = product, time = event time).</summary>
    private static async Task<string> FillTopicAsync(int count, CancellationToken cancellationToken)
    {
        var topic = "bench-streams-" + Guid.NewGuid().ToString("N")[..12];
        if (MockCluster.IsMock)
        {
            // The mock auto-creates topics with 4 partitions; one keeps the log in event-time order for every reader.
            MockCluster.CreateTopic(topic, 1);
        }

        await using var transport = await KafkaTransportFactory.CreateAsync(KafkaOptions("bench-streams-fill."), cancellationToken: cancellationToken);
        await transport.DeclareQueueAsync(topic, cancellationToken);
        // In event-time order (the watermark allows no disorder): each send is started in order from this one loop, so
        // the idempotent producer appends them in that order, with up to 64 awaiting the cluster's acknowledgement.
        var inFlight = new Queue<Task>();
        for (var i = 0; i < count; i++)
        {
            // The first send is awaited alone: it connects and looks the topic up, so the later ones reach the
            // producer without awaiting anything first.
            if (inFlight.Count == 64 || i == 1)
            {
                await inFlight.Dequeue();
            }

            var order = OrderAt(i);
            inFlight.Enqueue(transport.SendAsync(topic, new Envelope
            {
                MessageId = Guid.CreateVersion7(),
                MessageType = "bench-order",
                Time = order.PlacedAt,
                PartitionKey = order.ProductId,
                Body = JsonSerializer.SerializeToUtf8Bytes(order, Json),
            }, cancellationToken: cancellationToken).AsTask());
        }

        await Task.WhenAll(inFlight);

        // The mock keeps about 5 MB per partition and deletes the oldest records past that: every reader would then
        // start after them, and see fewer events than were sent.
        using var probe = new ConsumerBuilder<Ignore, Ignore>(new ConsumerConfig { BootstrapServers = MockCluster.BootstrapServers, GroupId = topic }).Build();
        var offsets = probe.QueryWatermarkOffsets(new TopicPartition(topic, 0), TimeSpan.FromSeconds(30));
        if (offsets.Low.Value != 0 || offsets.High.Value != count)
        {
            throw new InvalidOperationException($"The topic holds offsets {offsets.Low.Value} to {offsets.High.Value} of the {count} records sent: the cluster deleted the oldest.");
        }

        return topic;
    }

    private static KafkaTransportOptions KafkaOptions(string groupIdPrefix) => new()
    {
        BootstrapServers = MockCluster.BootstrapServers,
        GroupIdPrefix = groupIdPrefix,
        GroupProtocol = MockCluster.IsMock ? KafkaGroupProtocol.Consumer : KafkaGroupProtocol.Classic,
        CreateTopics = !MockCluster.IsMock,
        TopicPartitions = 1,
    };

    private static async Task<Row> HeraldKafkaAsync(string topic, int count, CancellationToken cancellationToken)
    {
        var first = new Progress(ExpectedWindows(count));
        long late = 0;
        var builder = Host.CreateEmptyApplicationBuilder(new HostApplicationBuilderSettings());
        builder.Logging.AddConsole().SetMinimumLevel(LogLevel.Warning);
        builder.Services.AddHerald(h => h
            .UseKafka(o =>
            {
                var options = KafkaOptions($"bench-streams-{Guid.NewGuid():N}.");
                o.BootstrapServers = options.BootstrapServers;
                o.GroupIdPrefix = options.GroupIdPrefix;
                o.GroupProtocol = options.GroupProtocol;
                o.CreateTopics = options.CreateTopics;
                o.TopicPartitions = options.TopicPartitions;
            })
            .AddMessageType<BenchOrder>("bench-order")
            .AddStream(
                "bench",
                b => Define(b, byKey: true, _ => first.Emitted()),
                new StreamProcessorOptions { Source = StreamSource.Transport, OnLate = _ => Interlocked.Increment(ref late) })

            // One lane: the partition's records reach the stream in log order (several lanes would run keys side by
            // side and reorder event time, making records late).
            .Configure(o =>
            {
                o.EndpointName = topic;
                o.MaxConcurrency = 1;
                o.Prefetch = 500;
            }));
        using var host = builder.Build();
        var cpu = Cpu();
        first.Clock.Start();
        await host.StartAsync(cancellationToken);
        try
        {
            var elapsed = await first.WaitAsync(cancellationToken);
            var cpuTime = Cpu() - cpu;
            Check(first.Windows, count);
            if (Interlocked.Read(ref late) > 0)
            {
                throw new InvalidOperationException($"{late} records came late: the topic is not in event-time order, and no contender would count them.");
            }

            return first.Stamp(new Row("Herald Kafka", count, elapsed, cpuTime, TimeSpan.Zero, 0,
                "`StreamSource.Transport` with `UseKafka`: the host's endpoint consumes the topic (KIP-848 group on the mock, one lane, prefetch 500, offsets committed every 500 ms), decodes each record's CloudEvents headers and JSON body, runs it through the consuming chain to the stream (GroupByKey: the record key is the product); state in memory (`InMemoryStreamStateStore`); timed from `host.StartAsync`"));
        }
        finally
        {
            await host.StopAsync(CancellationToken.None);
        }
    }

    private static async Task<Row> StreamizAsync(string topic, int count, bool changelog, CancellationToken cancellationToken)
    {
        var first = new Progress(ExpectedWindows(count));
        var appId = "bench-streamiz-" + Guid.NewGuid().ToString("N")[..12];
        var stateDir = Path.Combine(Path.GetTempPath(), appId);
        var config = new StreamConfig<StringSerDes, StringSerDes>
        {
            ApplicationId = appId,
            BootstrapServers = MockCluster.BootstrapServers,
            AutoOffsetReset = AutoOffsetReset.Earliest,
            StateDir = stateDir,
            Logger = LoggerFactory.Create(b => b.AddConsole().SetMinimumLevel(LogLevel.Warning)),
        };

        var store = InMemoryWindows.As<string, decimal>("revenue", TimeSpan.FromMinutes(1))
            .WithKeySerdes(new StringSerDes())
            .WithValueSerdes(new DecimalSerDes());
        var buffer = StrictBufferConfig.Unbounded();
        if (!changelog)
        {
            store = store.WithLoggingDisabled();
            buffer = buffer.WithLoggingDisabled();
        }

        var builder = new Streamiz.Kafka.Net.StreamBuilder();
        builder.Stream<string, BenchOrder, StringSerDes, JsonSerDes<BenchOrder>>(topic, new PlacedAtExtractor())
            .GroupByKey()
            .WindowedBy(TumblingWindowOptions.Of(TimeSpan.FromMinutes(1)))
            .Aggregate(() => 0m, (_, o, sum) => sum + o.Amount, store)
            .Suppress(SuppressedBuilder.UntilWindowClose<StreamizWindowed, decimal>(TimeSpan.Zero, buffer)
                .WithKeySerdes(new TimeWindowedSerDes<string>(new StringSerDes(), (long)TimeSpan.FromMinutes(1).TotalMilliseconds))
                .WithValueSerdes(new DecimalSerDes()))
            .ToStream()
            .Foreach((_, _, _) => first.Emitted());
        var topology = builder.Build();
        if (changelog && MockCluster.IsMock)
        {
            // Streamiz creates its changelog topics through the admin API (CreateTopics), which the mock does not
            // answer (it logs "Failed while waiting for controller: Local: Timed out" and retries, up to 10 times):
            // create them with the mock's own call, as Streamiz names them, one partition like the source.
            foreach (var name in topology.Describe().SubTopologies.SelectMany(s => s.Nodes).OfType<IProcessorNodeDescription>().SelectMany(n => n.Stores).Distinct())
            {
                MockCluster.CreateTopic($"{appId}-{name}-changelog", 1);
            }
        }

        var stream = new KafkaStream(topology, config);
        try
        {
            var cpu = Cpu();
            first.Clock.Start();
            await stream.StartAsync(cancellationToken);
            var elapsed = await first.WaitAsync(cancellationToken);
            var cpuTime = Cpu() - cpu;
            Check(first.Windows, count);
            return first.Stamp(changelog
                ? new Row("Streamiz Kafka, changelog", count, elapsed, cpuTime, TimeSpan.Zero, 0,
                    "Streamiz's defaults for this topology: the in-memory window store and the suppression buffer each log every update to a changelog topic (the stores' durability; record caching is off by default, so about one record per event per store, sent by its producer as it processes); timed from `KafkaStream.StartAsync`")
                : new Row("Streamiz Kafka", count, elapsed, cpuTime, TimeSpan.Zero, 0,
                    "Streamiz.Kafka.Net: `Stream(topic, timestamp extractor = PlacedAt)`, `GroupByKey`, 1-minute tumbling window, `Aggregate` into an in-memory window store (retention 1 minute), `Suppress(UntilWindowClose, grace 0)`, `Foreach`; JSON value serdes (System.Text.Json, web defaults), changelogs off for both stores (state in memory only, as Herald's row); one stream thread, classic group, at least once, commit every 30 s (its defaults); timed from `KafkaStream.StartAsync`"));
        }
        finally
        {
            stream.Dispose();
            if (Directory.Exists(stateDir))
            {
                Directory.Delete(stateDir, recursive: true);
            }
        }
    }

    /// <summary>Counts a Kafka contender's closed windows from the start of its client: when the first and the last came.</summary>
    private sealed class Progress(long expected)
    {
        private readonly TaskCompletionSource _done = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private long _windows;
        private TimeSpan _first;
        private TimeSpan _lastProgress;

        public Stopwatch Clock { get; } = new();

        public long Windows => Interlocked.Read(ref _windows);

        public void Emitted()
        {
            var n = Interlocked.Increment(ref _windows);
            _lastProgress = Clock.Elapsed;
            if (n == 1)
            {
                _first = Clock.Elapsed;
            }

            if (n == expected)
            {
                Clock.Stop();
                _done.TrySetResult();
            }
        }

        public async Task<TimeSpan> WaitAsync(CancellationToken cancellationToken)
        {
            try
            {
                var deadline = Stopwatch.StartNew();
                while (!_done.Task.IsCompleted)
                {
                    await Task.WhenAny(_done.Task, Task.Delay(TimeSpan.FromSeconds(5), cancellationToken));
                    Console.WriteLine($"    {Windows}/{expected} windows after {Clock.Elapsed.TotalSeconds:0.0} s");
                    if (deadline.Elapsed > TimeSpan.FromMinutes(3))
                    {
                        throw new TimeoutException();
                    }
                }
            }
            catch (TimeoutException)
            {
                throw new TimeoutException($"Saw {Windows} of {expected} closed windows within 3 minutes, the last {_lastProgress.TotalSeconds:0.0} s after the start.");
            }

            return Clock.Elapsed;
        }

        public Row Stamp(Row row) => row with { FirstWindow = _first };
    }

    /// <summary>Event time from the order itself, as the Herald rows take it (<c>Stream&lt;BenchOrder&gt;(o =&gt; o.PlacedAt)</c>).</summary>
    private sealed class PlacedAtExtractor : Streamiz.Kafka.Net.Processors.ITimestampExtractor
    {
        public long Extract(ConsumeResult<object, object> record, long partitionTime) =>
            ((BenchOrder)record.Message.Value).PlacedAt.ToUnixTimeMilliseconds();
    }

    private sealed class JsonSerDes<T> : AbstractSerDes<T>
    {
        public override T Deserialize(byte[] data, SerializationContext context) => JsonSerializer.Deserialize<T>(data, Json)!;

        public override byte[] Serialize(T data, SerializationContext context) => JsonSerializer.SerializeToUtf8Bytes(data, Json);
    }

    private sealed class DecimalSerDes : AbstractSerDes<decimal>
    {
        public override decimal Deserialize(byte[] data, SerializationContext context) =>
            decimal.Parse(System.Text.Encoding.UTF8.GetString(data), CultureInfo.InvariantCulture);

        public override byte[] Serialize(decimal data, SerializationContext context) =>
            System.Text.Encoding.UTF8.GetBytes(data.ToString(CultureInfo.InvariantCulture));
    }
}
