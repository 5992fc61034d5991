using System.Collections.Concurrent;
using Herald.Conformance;
using Herald.EventSourcing;
using Herald.Hosting;
using Herald.Messages;
using Herald.Reliability.DeadLetters;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace Herald.Streams.Tests;

/// <summary>What a run of the partition scenario produced: tables, windows, sink outputs and late records.</summary>
internal sealed record PartitionResult(
    IReadOnlyList<KeyValuePair<string, decimal>> Totals,
    IReadOnlyList<string> Windows,
    IReadOnlyList<string> Outputs,
    long Late);

/// <summary>
/// Orders of eight products (some out of order, some late) and payments of most of them: an aggregation per product, a
/// suppressed windowed count per product and a left join of orders with payments within 10 minutes, all re-keyed from the
/// stream the events were appended to.
/// </summary>
internal static class PartitionScenario
{
    public const int Orders = 160;
    private static readonly DateTimeOffset T0 = new(2026, 1, 1, 0, 0, 0, TimeSpan.Zero);

    public static string[] Products { get; } = [.. Enumerable.Range(0, 8).Select(i => "p" + i)];

    public static StreamProcessorOptions Options(int partitions, Action<LateRecord>? onLate = null) => new()
    {
        Partitions = partitions,
        AllowedOutOfOrderness = TimeSpan.FromMinutes(1),
        CommitEvery = 25,
        PartitionBalanceInterval = TimeSpan.FromMilliseconds(100),
        OnLate = onLate,
    };

    public static void Configure(HeraldBuilder h) => h.AddMessageType<Payment>("stream-test-payment");

    public static Order OrderAt(int i)
    {
        // Every fifth order comes 3 minutes after its time: beyond the allowed minute, so some of them are late.
        var time = T0.AddSeconds(30 * i).AddMinutes(i % 5 == 3 ? -3 : 0);
        return new Order($"o{i}", Products[(i * 7) % Products.Length], 1 + (i % 9), time);
    }

    public static Payment? PaymentOf(int i) =>
        i % 3 == 0 ? null : new Payment($"o{i}", 1 + (i % 9), OrderAt(i).PlacedAt.AddMinutes(i % 4 * 4)); // 12 minutes is too late to join

    public static void Build(StreamBuilder b, ConcurrentQueue<string> outputs)
    {
        var orders = b.Stream<Order>(o => o.PlacedAt);
        var byProduct = orders.GroupBy(o => o.ProductId);
        byProduct.Aggregate(() => 0m, (_, o, sum) => sum + o.Amount, "totals");
        byProduct.WindowedBy(TumblingWindows.Of(TimeSpan.FromMinutes(5))).SuppressUntilWindowCloses().Count("per-window").ToStream()
            .To(StreamSinks.Callback<Windowed<string>, long>(o => outputs.Enqueue($"window {o.Key.Key} {o.Key.Window.Start:O} {o.Value}")));
        var payments = b.Stream<Payment>(p => p.PaidAt).SelectKey(p => p.OrderId);
        orders.SelectKey(o => o.OrderId)
            .LeftJoin(payments, (o, p) => $"{o.Amount}/{p?.Amount}", JoinWindows.Of(TimeSpan.FromMinutes(10)))
            .To(StreamSinks.Callback<string, string>(o => outputs.Enqueue($"join {o.Key} {o.Value} {o.EventTime:O}")));
    }

    public static async Task<long> AppendAsync(IServiceProvider services, int from, int to)
    {
        var events = services.GetRequiredService<IEventStore>();
        var envelopes = services.GetRequiredService<EnvelopeFactory>();

        // The last append's own position, not GetLastPositionAsync: on PostgreSQL an older transaction elsewhere on the
        // server (another test's) holds the readable head back, and that returns what is readable after 10 s.
        var last = 0L;
        for (var i = from; i < to; i++)
        {
            last = Math.Max(last, (await events.AppendAsync("order-" + i, ExpectedVersion.NoStream, [envelopes.Create(OrderAt(i))])).LastPosition);
            if (PaymentOf(i) is { } payment)
            {
                last = Math.Max(last, (await events.AppendAsync("payment-" + i, ExpectedVersion.NoStream, [envelopes.Create(payment)])).LastPosition);
            }
        }

        return last;
    }

    /// <summary>The state of every processor given (each answers for its own partitions), merged.</summary>
    public static async Task<(List<KeyValuePair<string, decimal>> Totals, List<string> Windows)> StateAsync(params StreamProcessor[] processors)
    {
        var totals = new List<KeyValuePair<string, decimal>>();
        var windows = new List<string>();
        foreach (var processor in processors)
        {
            totals.AddRange(await processor.QueryAllAsync<string, decimal>("totals"));
            foreach (var product in Products)
            {
                var counts = await processor.QueryWindowsAsync<string, long>("per-window", product, DateTimeOffset.MinValue, DateTimeOffset.MaxValue);
                windows.AddRange(counts.Select(c => $"{product} {c.Key.Window.Start:O} {c.Value}"));
            }
        }

        return ([.. totals.OrderBy(t => t.Key, StringComparer.Ordinal)], [.. windows.Order(StringComparer.Ordinal)]);
    }

    public static async Task<PartitionResult> RunAsync(IServiceProvider services, string name, int partitions, long head)
    {
        var outputs = new ConcurrentQueue<string>();
        long late = 0;
        var builder = new StreamBuilder();
        Build(builder, outputs);
        await using var processor = new StreamProcessor(name, builder.Build(), services, Options(partitions, _ => Interlocked.Increment(ref late)));
        await processor.StartAsync();
        Assert.Equal(Enumerable.Range(0, partitions), processor.OwnedPartitions);
        await processor.WaitForPositionAsync(head).WaitAsync(TimeSpan.FromSeconds(30));
        var (totals, windows) = await StateAsync(processor);
        return new PartitionResult(totals, windows, [.. outputs.Order(StringComparer.Ordinal)], Interlocked.Read(ref late));
    }
}

public sealed class PartitionTests
{
    [Fact]
    public async Task FourPartitions_GiveTheResultsOfOneTask_ForAnAggregationAWindowedAggregationAndAJoin()
    {
        using var host = await ProcessorScenario.StartHostAsync(PartitionScenario.Configure);
        var head = await PartitionScenario.AppendAsync(host.Services, 0, PartitionScenario.Orders);

        var one = await PartitionScenario.RunAsync(host.Services, "one-task", 1, head);
        var four = await PartitionScenario.RunAsync(host.Services, "four-tasks", 4, head);

        Assert.Equal(PartitionScenario.Products.Length, one.Totals.Count);
        Assert.Equal(Enumerable.Range(0, PartitionScenario.Orders).Sum(i => PartitionScenario.OrderAt(i).Amount), one.Totals.Sum(t => t.Value));
        Assert.Contains(one.Outputs, o => o.StartsWith("window ", StringComparison.Ordinal));
        Assert.Contains(one.Outputs, o => o.StartsWith("join ", StringComparison.Ordinal) && o.Contains("/ ", StringComparison.Ordinal)); // unmatched
        Assert.True(one.Late > 0, "the scenario should have late records");
        Assert.Equal(one.Totals, four.Totals);
        Assert.Equal(one.Windows, four.Windows);
        Assert.Equal(one.Outputs, four.Outputs);
        Assert.Equal(one.Late, four.Late);
        await host.StopAsync();
    }

    [Fact]
    public async Task TwoPartitions_AFunctionThrowingOnAWindowClosedByACommitBarrier_IsDeadLettered_AndTheProcessorGoesOn()
    {
        // A window closes in the partition that owns its key when the stream time reaches it, which may be at a commit
        // barrier (the records that moved it went to the other partition). The Map after it threw there, outside any
        // event: the commit failed, and every restart failed the same way, so the stream never got past it.
        using var host = await ProcessorScenario.StartHostAsync(_ => { });
        var bad = "p-bad";
        var good = Enumerable.Range(0, 100).Select(i => "p" + i).First(k => StreamPartitioner.PartitionOf(k, 2) != StreamPartitioner.PartitionOf(bad, 2));
        var events = host.Services.GetRequiredService<IEventStore>();
        var envelopes = host.Services.GetRequiredService<EnvelopeFactory>();
        var t0 = new DateTimeOffset(2026, 1, 1, 0, 0, 0, TimeSpan.Zero);
        var orders = new[] { (bad, 0), (good, 1), (good, 6), (good, 7) };
        for (var i = 0; i < orders.Length; i++)
        {
            var (product, minutes) = orders[i];
            await events.AppendAsync("order-" + i, ExpectedVersion.NoStream, [envelopes.Create(new Order($"o{i}", product, 1, t0.AddMinutes(minutes)))]);
        }

        var head = await events.GetLastPositionAsync();
        var outputs = new ConcurrentQueue<string>();
        var builder = new StreamBuilder();
        builder.Stream<Order>(o => o.PlacedAt).GroupBy(o => o.ProductId)
            .WindowedBy(TumblingWindows.Of(TimeSpan.FromMinutes(5))).SuppressUntilWindowCloses().Count("per-window").ToStream()
            .Map((w, count) => w.Key == bad ? throw new InvalidOperationException("cannot map " + w.Key) : $"{w.Key} {count}")
            .To(StreamSinks.Callback<Windowed<string>, string>(o => outputs.Enqueue(o.Value)));
        await using var processor = new StreamProcessor("timer-failure", builder.Build(), host.Services, new StreamProcessorOptions { Partitions = 2 });
        await processor.StartAsync();

        await processor.WaitForPositionAsync(head).WaitAsync(TimeSpan.FromSeconds(30));
        Assert.False(processor.Completion.IsFaulted);
        Assert.Equal([$"{good} 1"], outputs);
        var deadLetter = Assert.Single(await host.Services.GetRequiredService<IDeadLetterStore>().ListAsync(new DeadLetterQuery { Endpoint = "stream:timer-failure" }));
        Assert.Equal(DeadLetterCause.NotRetryable, deadLetter.Cause);
        Assert.Contains("'map-", deadLetter.ErrorMessage, StringComparison.Ordinal);
        Assert.Contains("cannot map " + bad, deadLetter.ErrorMessage, StringComparison.Ordinal);
        await host.StopAsync();
    }

    [Fact]
    public async Task TwoPartitions_ProcessTheirKeysConcurrently()
    {
        using var host = await ProcessorScenario.StartHostAsync(_ => { });
        var keys = Enumerable.Range(0, 64).Select(i => "k" + i).ToList();
        var first = keys[0];
        var second = keys.First(k => StreamPartitioner.PartitionOf(k, 2) != StreamPartitioner.PartitionOf(first, 2));
        using var meeting = new Barrier(2);
        var met = new ConcurrentQueue<bool>();
        var builder = new StreamBuilder();

        // Each key's first record waits in its aggregator for the other's: one task would wait alone until the timeout.
        builder.Stream<Order>().GroupBy(o => o.ProductId).Aggregate(
            () => 0,
            (_, _, count) =>
            {
                if (count == 0)
                {
                    met.Enqueue(meeting.SignalAndWait(TimeSpan.FromSeconds(5)));
                }

                return count + 1;
            },
            "counts");
        await using var processor = new StreamProcessor("parallel", builder.Build(), host.Services, new StreamProcessorOptions { Partitions = 2 });
        await processor.StartAsync();
        var events = host.Services.GetRequiredService<IEventStore>();
        var envelopes = host.Services.GetRequiredService<EnvelopeFactory>();
        await events.AppendAsync("order-1", ExpectedVersion.NoStream, [envelopes.Create(ProcessorScenario.OrderAt(1) with { ProductId = first })]);
        await events.AppendAsync("order-2", ExpectedVersion.NoStream, [envelopes.Create(ProcessorScenario.OrderAt(2) with { ProductId = second })]);
        await processor.WaitForPositionAsync(await events.GetLastPositionAsync()).WaitAsync(TimeSpan.FromSeconds(30));

        Assert.Equal([true, true], met);
        Assert.Equal(1, await processor.QueryAsync<string, int>("counts", first));
        Assert.Equal(1, await processor.QueryAsync<string, int>("counts", second));
        await host.StopAsync();
    }

    [Fact]
    public void Partitioner_IsStableAndKeepsTheWindowsOfAKeyTogether()
    {
        // FNV-1a of the key's JSON: fixed values, whatever the process or runtime.
        Assert.Equal(2166136261u, StreamPartitioner.Hash([]));
        Assert.Equal(0xe40c292cu, StreamPartitioner.Hash("a"u8));
        var window = new TimeWindow(DateTimeOffset.UnixEpoch, DateTimeOffset.UnixEpoch.AddMinutes(5));
        foreach (var key in Enumerable.Range(0, 50).Select(i => "key-" + i))
        {
            Assert.Equal(StreamPartitioner.PartitionOf(key, 4), StreamPartitioner.PartitionOf(new Windowed<string>(key, window), 4));
        }

        Assert.Equal(4, Enumerable.Range(0, 50).Select(i => StreamPartitioner.PartitionOf("key-" + i, 4)).Distinct().Count());
    }
}

public sealed class PostgresPartitionTests : IAsyncLifetime
{
    // Fewer events than the in-memory scenario: each append is a round trip.
    private const int Orders = 80;

    private static readonly string ConnectionString = TestPostgres.ConnectionString;

    private readonly string _schema = TestPostgres.NewSchema();

    [Fact]
    public async Task TwoHosts_ShareThePartitions_AndOneTakesOverWhenTheOtherStops_CountingEveryEventOnce()
    {
        var outputs = new ConcurrentQueue<string>();

        // What the two hosts log about their partitions and leases, for the message of a failed check (CI once saw a host
        // hold 1 of 4 partitions while both ran).
        var log = new TestOutputLogger(LogLevel.Information);
        Action<HeraldBuilder> configure = h =>
        {
            h.Services.AddLogging(l => l.AddProvider(log));
            PartitionScenario.Configure(h);
            h.UsePostgres(ConnectionString, o => o.Schema = _schema).UsePostgresStreamState()
                .AddStream("shared", b => PartitionScenario.Build(b, outputs), PartitionScenario.Options(4));
        };
        var first = await ProcessorScenario.StartHostAsync(configure);
        var second = await ProcessorScenario.StartHostAsync(configure);
        try
        {
            var a = first.Services.GetRequiredService<StreamProcessors>()["shared"];
            var b = second.Services.GetRequiredService<StreamProcessors>()["shared"];
            await Eventually.UntilAsync(() => a.OwnedPartitions.Count == 2 && b.OwnedPartitions.Count == 2, "the two hosts hold two partitions each");
            Assert.Empty(a.OwnedPartitions.Intersect(b.OwnedPartitions));

            var half = await PartitionScenario.AppendAsync(first.Services, 0, Orders / 2);
            await Task.WhenAll(a.WaitForPositionAsync(half), b.WaitForPositionAsync(half)).WaitAsync(TimeSpan.FromSeconds(30));
            Assert.True(a.OwnedPartitions.Count == 2 && b.OwnedPartitions.Count == 2, $"Both should still hold 2 partitions: [{string.Join(",", a.OwnedPartitions)}] and [{string.Join(",", b.OwnedPartitions)}]. Log:\n{log}");

            await second.StopAsync();
            await Eventually.UntilAsync(() => a.OwnedPartitions.Count == 4, "the first host takes over every partition");
            var head = await PartitionScenario.AppendAsync(first.Services, Orders / 2, Orders);
            await a.WaitForPositionAsync(head).WaitAsync(TimeSpan.FromSeconds(30));

            // The same as one task over the same events in a fresh in-memory host.
            using var reference = await ProcessorScenario.StartHostAsync(PartitionScenario.Configure);
            var referenceHead = await PartitionScenario.AppendAsync(reference.Services, 0, Orders);
            var expected = await PartitionScenario.RunAsync(reference.Services, "reference", 1, referenceHead);
            var (totals, windows) = await PartitionScenario.StateAsync(a);
            Assert.Equal(expected.Totals, totals);
            Assert.Equal(expected.Windows, windows);

            // Outputs: those of commits that were stored, each once (callbacks of a refused commit do not happen here).
            Assert.Equal(expected.Outputs, outputs.Order(StringComparer.Ordinal));
            await reference.StopAsync();
        }
        finally
        {
            await second.StopAsync();
            second.Dispose();
            await first.StopAsync();
            first.Dispose();
        }
    }

    public Task InitializeAsync() => Task.CompletedTask;

    public Task DisposeAsync() => TestPostgres.DropAsync(_schema);
}
