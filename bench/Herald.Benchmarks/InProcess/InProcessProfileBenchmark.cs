using Herald.Persistence;
using System.Diagnostics;
using System.Globalization;
using System.Text;
using Herald.Benchmarks.Harness;
using Herald.Handling;
using Herald.Handling.Pipeline;
using Herald.Messages;
using Herald.Transport;
using Herald.Transport.InMemory;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging.Abstractions;

namespace Herald.Benchmarks.InProcess;

/// <summary>
/// Where Herald's in-process time and allocations go: each step of the publish → handler path measured alone
/// (single-threaded steps with the current thread's allocation counter), then the transport alone across threads.
/// Uses Herald internals (the endpoint pipeline), so it may need updating when they change.
/// </summary>
internal sealed class InProcessProfileBenchmark : IBenchmark
{
    private const string Topic = "bench.ping";

    public string Name => "inprocess-profile";

    public string Description => "Herald in-process path step by step: bytes and ns per message for each stage (uses internals)";

    public async Task RunAsync(BenchmarkArgs args, CancellationToken cancellationToken)
    {
        var n = args.Quick ? 20_000 : 200_000;
        var cpuAtStart = CpuSample.Take();
        var steps = new MarkdownTable("Step", "ns/op", "bytes/op");
        var ping = new HeraldPing(123_456);
        var serializer = new SystemTextJsonMessageSerializer();
        var registry = new MessageTypeRegistry();
        registry.Register<HeraldPing>();
        var factory = new EnvelopeFactory(registry, serializer, TimeProvider.System);
        var envelope = factory.Create(ping);

        Add(steps, "serializer.Serialize (body byte[])", Sync(n, () => serializer.Serialize(ping, typeof(HeraldPing))));
        Add(steps, "serializer.Deserialize (message object)", Sync(n, () => serializer.Deserialize(envelope.Body, typeof(HeraldPing))));
        var propsBody = serializer.Serialize(new HeraldPingProps { Sequence = 123_456 }, typeof(HeraldPingProps));
        Add(steps, "serializer.Deserialize, same JSON into a class with init properties (no constructor parameters)", Sync(n, () => serializer.Deserialize(propsBody, typeof(HeraldPingProps))));
        var generated = new SystemTextJsonMessageSerializer(new System.Text.Json.JsonSerializerOptions(System.Text.Json.JsonSerializerDefaults.Web) { TypeInfoResolver = ProfileJsonContext.Default });
        Add(steps, "serializer.Deserialize, positional record, source-generated JsonSerializerContext", Sync(n, () => generated.Deserialize(envelope.Body, typeof(HeraldPing))));
        Add(steps, "serializer.Serialize, positional record, source-generated JsonSerializerContext", Sync(n, () => generated.Serialize(ping, typeof(HeraldPing))));
        Add(steps, "EnvelopeFactory.Create (Envelope + correlation id string + body)", Sync(n, () => factory.Create(ping)));
        Add(steps, "new Envelope via `with` (the queue's copy with DeliveryAttempt = 1)", Sync(n, () => envelope with { DeliveryAttempt = 1 }));
        var delivered1 = envelope with { DeliveryAttempt = 1 };
        Add(steps, "InvalidEnvelopeException.Check (valid envelope)", Sync(n, () => InvalidEnvelopeException.Check(delivered1)));
        Add(steps, "Guid.ToString() (default CorrelationId)", Sync(n, () => envelope.MessageId.ToString()));
        Add(steps, "Guid.CreateVersion7(TimeProvider.System.GetUtcNow())", Sync(n, () => Guid.CreateVersion7(TimeProvider.System.GetUtcNow()).ToByteArray().Length > 0 ? null : null));

        await using (var transport = new InMemoryTransport(new InMemoryTransportOptions { QueueCapacity = 10_000_000 }, TimeProvider.System))
        {
            await transport.BindAsync(Topic, "q", cancellationToken);

            // A consumer drains the queue on another thread, so the published envelopes die young as they do in a real run.
            var drained = await transport.ConsumeAsync("q", new ConsumerOptions(), Ack(new HandledCounter()), cancellationToken);
            Add(steps, "InMemoryTransport.PublishAsync, room in the queue (permit, copy, channel write)", Sync(n, () => Completed(transport.PublishAsync(Topic, envelope, cancellationToken: cancellationToken))));
            await drained.DisposeAsync();
        }

        foreach (var lifetime in new[] { ServiceLifetime.Singleton, ServiceLifetime.Scoped })
        {
            await using var services = BuildServices(lifetime, 10_000_000);
            var bus = services.GetRequiredService<IMessageBus>();
            var transport = services.GetRequiredService<ITransport>();
            await transport.BindAsync(Topic, "herald", cancellationToken);
            await transport.ConsumeAsync("herald", new ConsumerOptions(), Ack(new HandledCounter()), cancellationToken);
            if (lifetime == ServiceLifetime.Singleton)
            {
                Add(steps, "IMessageBus.PublishAsync, room in the queue (all of the publish side)", Sync(n, () => Completed(bus.PublishAsync(ping, cancellationToken: cancellationToken))));
                Add(steps, "IServiceProvider.CreateAsyncScope + DisposeAsync", Sync(n, () => Completed(services.CreateAsyncScope().DisposeAsync())));
                Add(steps, "new InMemoryDelivery-sized Delivery (harness object, subtract from the pipeline rows)", Sync(n, () => new BenchDelivery(envelope)));
            }
            else
            {
                Add(steps, "scope + resolve scoped handler + DisposeAsync", Sync(n, () =>
                {
                    var scope = services.CreateAsyncScope();
                    _ = scope.ServiceProvider.GetRequiredService<HeraldPingHandler>();
                    return Completed(scope.DisposeAsync());
                }));
                Add(steps, "scope + resolve scoped handler + resolve IUnitOfWork + CommitAsync + DisposeAsync", Sync(n, () =>
                {
                    var scope = services.CreateAsyncScope();
                    _ = scope.ServiceProvider.GetRequiredService<HeraldPingHandler>();
                    Completed(scope.ServiceProvider.GetRequiredService<Herald.Persistence.IUnitOfWork>().CommitAsync(cancellationToken));
                    return Completed(scope.DisposeAsync());
                }));
            }

            var pipeline = services.GetRequiredService<EndpointPipelineFactory>().Create("herald");
            var delivered = envelope with { DeliveryAttempt = 1 };
            Add(steps, $"EndpointPipeline.HandleAsync, {lifetime.ToString().ToLowerInvariant()} handler (decode, context, handler, ack; incl. the Delivery)", Sync(n, () => Completed(pipeline.HandleAsync(new BenchDelivery(delivered), cancellationToken))));
        }

        var flows = new MarkdownTable("Transport only, across threads", "msg/s", "bytes/msg");
        foreach (var concurrency in new[] { 1, 2 })
        {
            var result = await DrainAsync(envelope, n * 5, concurrency, cancellationToken);
            flows.Add($"consume a pre-filled queue, MaxConcurrency {concurrency} (handler acks)", F(result.MessagesPerSecond), F(result.BytesPerMessage));
        }

        foreach (var concurrency in new[] { 1, 2 })
        {
            var result = await FlowAsync(envelope, n * 5, concurrency, cancellationToken);
            flows.Add($"publish → consume, 1 producer, capacity 10,000, MaxConcurrency {concurrency}", F(result.MessagesPerSecond), F(result.BytesPerMessage));
        }

        var foreign = CpuSample.ForeignShare(cpuAtStart, CpuSample.Take());
        var text = new StringBuilder();
        text.AppendLine("# Herald in-process path, step by step");
        text.AppendLine();
        text.AppendLine(CultureInfo.InvariantCulture, $"`dotnet run -c Release --project bench/Herald.Benchmarks -- inprocess-profile` — {n:N0} operations per step, on one thread unless stated (bytes: that thread's allocation counter).");
        text.AppendLine();
        text.AppendLine(CultureInfo.InvariantCulture, $"Bytes are exact and repeatable; ns are the median of three rounds and move with the machine's load (other processes used {(foreign is { } f ? f.ToString("P0", CultureInfo.InvariantCulture) : "an unknown share")} of it during this run). Machine: {Environment.ProcessorCount} cores, {System.Runtime.InteropServices.RuntimeInformation.OSDescription}, {System.Runtime.InteropServices.RuntimeInformation.FrameworkDescription}.");
        text.AppendLine();
        text.Append(steps);
        text.AppendLine();
        text.Append(flows);
        Console.WriteLine(text);
        if (!args.Quick && ResultsFile.Resolve(args, Name) is { } path)
        {
            ResultsFile.Write(path, text.ToString());
            Console.WriteLine($"Results written to {path}");
        }
    }

    private static ServiceProvider BuildServices(ServiceLifetime lifetime, int capacity)
    {
        var services = new ServiceCollection();
        services.AddLogging();
        services.AddSingleton(new HandledCounter());
        services.AddHerald(h => h.AddHandler<HeraldPingHandler>(lifetime).UseInMemoryTransport(new InMemoryTransportOptions { QueueCapacity = capacity }));
        return services.BuildServiceProvider();
    }

    private static async Task<Measurement> DrainAsync(Envelope envelope, int n, int concurrency, CancellationToken cancellationToken)
    {
        await using var transport = new InMemoryTransport(new InMemoryTransportOptions { QueueCapacity = n }, TimeProvider.System);
        await transport.BindAsync(Topic, "q", cancellationToken);
        for (var i = 0; i < n; i++)
        {
            await transport.PublishAsync(Topic, envelope, cancellationToken: cancellationToken);
        }

        var counter = new HandledCounter();
        counter.Reset(n);
        ITransportConsumer? consumer = null;
        var measurement = await Measurement.TakeAsync(n, async () =>
        {
            consumer = await transport.ConsumeAsync("q", new ConsumerOptions { MaxConcurrency = concurrency, Prefetch = 64 }, Ack(counter), cancellationToken);
            await counter.WaitAsync(TimeSpan.FromMinutes(1), cancellationToken);
        });
        await consumer!.DisposeAsync();
        return measurement;
    }

    private static async Task<Measurement> FlowAsync(Envelope envelope, int n, int concurrency, CancellationToken cancellationToken)
    {
        await using var transport = new InMemoryTransport();
        await transport.BindAsync(Topic, "q", cancellationToken);
        var counter = new HandledCounter();
        await using var consumer = await transport.ConsumeAsync("q", new ConsumerOptions { MaxConcurrency = concurrency, Prefetch = 64 }, Ack(counter), cancellationToken);
        async Task RunAsync(int count)
        {
            counter.Reset(count);
            await Producers.RunAsync(count, 1, _ => transport.PublishAsync(Topic, envelope, cancellationToken: cancellationToken), cancellationToken);
            await counter.WaitAsync(TimeSpan.FromMinutes(1), cancellationToken);
        }

        await RunAsync(n / 5);
        return await Measurement.TakeAsync(n, () => RunAsync(n));
    }

    private static DeliveryHandler Ack(HandledCounter counter) => (delivery, ct) =>
    {
        counter.Increment();
        return delivery.AckAsync(ct);
    };

    private static object? Completed(ValueTask task)
    {
        if (!task.IsCompletedSuccessfully)
        {
            throw new InvalidOperationException("Expected a synchronous completion in a single-threaded step.");
        }

        return null;
    }

    // Median of three measured rounds after the warm-up: single steps of a few hundred ns are noisy on a small VM.
    private static (double Ns, double Bytes) Sync(int n, Func<object?> step)
    {
        var rounds = new List<(double Ns, double Bytes)>();
        for (var round = 0; round < 3; round++)
        {
            rounds.Add(SyncOnce(n, step, warmUp: round == 0));
        }

        var ns = rounds.Select(r => r.Ns).Order().ElementAt(1);
        var bytes = rounds.Select(r => r.Bytes).Order().ElementAt(1);
        return (ns, bytes);
    }

    private static (double Ns, double Bytes) SyncOnce(int n, Func<object?> step, bool warmUp)
    {
        // Two warm-up rounds with a pause between, so tiered compilation has installed optimized code before measuring.
        for (var round = 0; round < (warmUp ? 2 : 0); round++)
        {
            for (var i = 0; i < Math.Min(n, 50_000); i++)
            {
                step();
            }

            Thread.Sleep(200);
        }

        GC.Collect();
        var before = GC.GetAllocatedBytesForCurrentThread();
        var started = Stopwatch.GetTimestamp();
        for (var i = 0; i < n; i++)
        {
            step();
        }

        var elapsed = Stopwatch.GetElapsedTime(started);
        var bytes = GC.GetAllocatedBytesForCurrentThread() - before;
        return (elapsed.TotalNanoseconds / n, (double)bytes / n);
    }

    private static void Add(MarkdownTable table, string step, (double Ns, double Bytes) result) =>
        table.Add(step, result.Ns.ToString("N0", CultureInfo.InvariantCulture), result.Bytes.ToString("N0", CultureInfo.InvariantCulture));

    private static string F(double value) => value.ToString("N0", CultureInfo.InvariantCulture);

    public sealed class HeraldPingProps
    {
        public int Sequence { get; init; }
    }

    /// <summary>A delivery that settles in place, to drive the dispatcher without a transport.</summary>
    private sealed class BenchDelivery(Envelope envelope) : Delivery(envelope, "herald")
    {
        protected override ValueTask OnAckAsync(CancellationToken cancellationToken) => ValueTask.CompletedTask;

        protected override ValueTask OnNackAsync(TimeSpan delay, CancellationToken cancellationToken) => ValueTask.CompletedTask;

        protected override ValueTask OnDeadLetterAsync(string reason, CancellationToken cancellationToken) => ValueTask.CompletedTask;
    }
}

[System.Text.Json.Serialization.JsonSerializable(typeof(HeraldPing))]
[System.Text.Json.Serialization.JsonSourceGenerationOptions(System.Text.Json.JsonSerializerDefaults.Web)]
internal sealed partial class ProfileJsonContext : System.Text.Json.Serialization.JsonSerializerContext;
