using System.Collections.Concurrent;
using Herald.Conformance;
using Herald.Hosting;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;

namespace Herald.Streams.Tests;

/// <summary>What a run of the repartition scenario produced: the re-keyed tables and windows, and the sink outputs.</summary>
internal sealed record RepartitionResult(
    IReadOnlyList<KeyValuePair<long, long>> SumsByRemainder,
    IReadOnlyList<string> Windows,
    IReadOnlyList<string> Outputs,
    long Late);

/// <summary>The product and start of a closed 5-minute window, with its order count.</summary>
public sealed record WindowCount(string ProductId, DateTimeOffset Start, long Count);

/// <summary>
/// Issue 15: topologies that re-key after an aggregate and aggregate again, over the orders of <see cref="PartitionScenario"/>
/// (some out of order, some late): the count per product re-keyed by its remainder mod 3 and summed (every update of the
/// first table, in source order, reaches the second), and the suppressed 5-minute count per product re-keyed by parity
/// and counted again in 15-minute windows (event time and watermark must cross the repartition).
/// </summary>
internal static class RepartitionScenario
{
    public static StreamProcessorOptions Options(int partitions, Action<LateRecord>? onLate = null) =>
        PartitionScenario.Options(partitions, onLate) with { CommitEvery = 20 };

    public static StreamTopology Topology(ConcurrentQueue<string> outputs, Func<bool>? failCommit = null)
    {
        var b = new StreamBuilder();
        Build(b, outputs, failCommit);
        return b.Build();
    }

    public static void Build(StreamBuilder b, ConcurrentQueue<string> outputs, Func<bool>? failCommit = null)
    {
        var byProduct = b.Stream<Order>(o => o.PlacedAt).GroupBy(o => o.ProductId);
        byProduct.Count("per-product").ToStream()
            .GroupBy(count => count % 3)
            .Aggregate(() => 0L, (_, count, sum) => sum + count, "sum-by-remainder").ToStream()
            .To(StreamSinks.Callback<long, long>(o =>
            {
                if (failCommit?.Invoke() == true)
                {
                    throw new InvalidOperationException("Simulated crash: this commit is refused.");
                }

                outputs.Enqueue($"sum {o.Key} {o.Value}");
            }));
        byProduct.WindowedBy(TumblingWindows.Of(TimeSpan.FromMinutes(5))).SuppressUntilWindowCloses().Count("per-window").ToStream()
            .Map((w, count) => new WindowCount(w.Key, w.Window.Start, count))
            .GroupBy(w => w.Count % 2 == 0 ? "even" : "odd")
            .WindowedBy(TumblingWindows.Of(TimeSpan.FromMinutes(15)))
            .Count("windows-by-parity").ToStream()
            .To(StreamSinks.Callback<Windowed<string>, long>(o => outputs.Enqueue($"parity {o.Key.Key} {o.Key.Window.Start:O} {o.Value}")));
    }

    public static async Task<(List<KeyValuePair<long, long>> Sums, List<string> Windows)> StateAsync(StreamProcessor processor)
    {
        var sums = await processor.QueryAllAsync<long, long>("sum-by-remainder");
        var windows = new List<string>();
        foreach (var parity in new[] { "even", "odd" })
        {
            var counts = await processor.QueryWindowsAsync<string, long>("windows-by-parity", parity, DateTimeOffset.MinValue, DateTimeOffset.MaxValue);
            windows.AddRange(counts.Select(c => $"{parity} {c.Key.Window.Start:O} {c.Value}"));
        }

        return ([.. sums], [.. windows.Order(StringComparer.Ordinal)]);
    }

    public static async Task<RepartitionResult> RunAsync(IServiceProvider services, string name, int partitions, long head)
    {
        var outputs = new ConcurrentQueue<string>();
        long late = 0;
        await using var processor = new StreamProcessor(name, Topology(outputs), services, Options(partitions, _ => Interlocked.Increment(ref late)));
        await processor.StartAsync();
        await processor.WaitForPositionAsync(head).WaitAsync(TimeSpan.FromSeconds(60));
        var (sums, windows) = await StateAsync(processor);
        return new RepartitionResult(sums, windows, [.. outputs.Order(StringComparer.Ordinal)], Interlocked.Read(ref late));
    }

    /// <summary>
    /// Four partitions whose run fails at a commit of the second sub-topology, then stops after the first half of the
    /// orders and resumes once the rest is appended (in a new host on the same database unless <paramref name="sharedHost"/>),
    /// give the tables and windows of one partition (which four partitions in one run give too, outputs included), and
    /// leave nothing in the repartition logs.
    /// </summary>
    public static async Task RunAllAsync(Action<HeraldBuilder> configure, bool sharedHost = false)
    {
        var first = await ProcessorScenario.StartHostAsync(h => { PartitionScenario.Configure(h); configure(h); });
        var second = first;
        try
        {
            var half = await PartitionScenario.AppendAsync(first.Services, 0, PartitionScenario.Orders / 2);

            // Run 1 fails at a commit of the second sub-topology after 25 of its outputs; run 2 stops after the first half.
            var options = Options(4);
            var written = 0;
            await using (var failing = new StreamProcessor("rekey-restart", Topology(new(), () => ++written > 25), first.Services, options))
            {
                await failing.StartAsync();
                var failure = await Assert.ThrowsAsync<InvalidOperationException>(() => failing.Completion.WaitAsync(TimeSpan.FromSeconds(60)));
                Assert.Contains("Simulated crash", failure.ToString(), StringComparison.Ordinal);
            }

            await using (var stopped = new StreamProcessor("rekey-restart", Topology(new()), first.Services, options))
            {
                await stopped.StartAsync();
                await stopped.WaitForPositionAsync(half).WaitAsync(TimeSpan.FromSeconds(60));
                await stopped.StopAsync();
            }

            var head = await PartitionScenario.AppendAsync(first.Services, PartitionScenario.Orders / 2, PartitionScenario.Orders);
            var one = await RunAsync(first.Services, "rekey-one", 1, head);
            var four = await RunAsync(first.Services, "rekey-four", 4, head);

            Assert.Equal(3, one.SumsByRemainder.Count);
            Assert.Contains(one.Outputs, o => o.StartsWith("parity ", StringComparison.Ordinal));
            Assert.True(one.Late > 0, "the scenario should have late records");
            Assert.Equal(one.SumsByRemainder, four.SumsByRemainder);
            Assert.Equal(one.Windows, four.Windows);
            Assert.Equal(one.Outputs, four.Outputs);
            Assert.Equal(one.Late, four.Late);

            second = sharedHost ? first : await ProcessorScenario.StartHostAsync(h => { PartitionScenario.Configure(h); configure(h); });
            await using var resumed = new StreamProcessor("rekey-restart", Topology(new()), second.Services, options);
            await resumed.StartAsync();
            await resumed.WaitForPositionAsync(head).WaitAsync(TimeSpan.FromSeconds(60));
            var (sums, windows) = await StateAsync(resumed);
            Assert.Equal(one.SumsByRemainder, sums);
            Assert.Equal(one.Windows, windows);
            await resumed.StopAsync();

            // Each record left its log with the commit that took it: only the writers' marks remain.
            var state = second.Services.GetService<IStreamStateStore>();
            if (state is not null)
            {
                for (var from = 0; from < 4; from++)
                {
                    for (var to = 0; to < 4; to++)
                    {
                        var entries = new List<StateEntry>();
                        await foreach (var entry in state.ReadAllAsync($"rekey-restart:repartition-1:{from}-{to}"))
                        {
                            entries.Add(entry);
                        }

                        Assert.Equal(["mark"], entries.Select(e => e.Key));
                    }
                }
            }
        }
        finally
        {
            if (!ReferenceEquals(second, first))
            {
                await second.StopAsync();
                second.Dispose();
            }

            await first.StopAsync();
            first.Dispose();
        }
    }
}

public sealed class RepartitionTests
{
    [Fact]
    public async Task InMemory_ARekeyAfterStateThatFeedsStateAgain_GivesTheSameResultsWithOneAndFourPartitions_AcrossAFailureAndAStop() =>
        await RepartitionScenario.RunAllAsync(_ => { }, sharedHost: true);

    [Fact]
    public void Partitions_StillRefuseARekeyAfterStateThatFeedsStateAgain_ForAnExternalSource()
    {
        var services = new ServiceCollection().AddHerald(_ => { }).BuildServiceProvider();
        var builder = new StreamBuilder();
        builder.Stream<Order>().GroupBy(o => o.ProductId).Count("per-product").ToStream().GroupBy(count => count).Count("products-per-count");
        var topology = builder.Build();

        var error = Assert.Throws<ArgumentException>(() => new StreamProcessor("rekey", topology, services, new StreamProcessorOptions { Partitions = 2, Source = StreamSource.External }));
        Assert.Contains("re-keys after one", error.Message, StringComparison.Ordinal);
        Assert.Throws<ArgumentOutOfRangeException>(() => new StreamProcessor("none", topology, services, new StreamProcessorOptions { Partitions = 0 }));
        _ = new StreamProcessor("one", topology, services, new StreamProcessorOptions { Source = StreamSource.External }); // one partition runs it
        _ = new StreamProcessor("two", topology, services, new StreamProcessorOptions { Partitions = 2 }); // the event store source splits it
    }
}

public sealed class SqliteRepartitionTests : IDisposable
{
    private readonly string _file = TestSqlite.NewFile("repartition");

    [Fact]
    public async Task Sqlite_ARekeyAfterStateThatFeedsStateAgain_GivesTheSameResultsWithOneAndFourPartitions_AcrossAFailureAndAStop() =>
        await RepartitionScenario.RunAllAsync(h => h.UseSqlite(_file).UseSqliteStreamState());

    public void Dispose() => TestSqlite.Delete(_file);
}

public sealed class PostgresRepartitionTests : IAsyncLifetime
{
    private readonly string _schema = TestPostgres.NewSchema();

    [Fact]
    public async Task Postgres_ARekeyAfterStateThatFeedsStateAgain_GivesTheSameResultsWithOneAndFourPartitions_AcrossAFailureAndAStop() =>
        await RepartitionScenario.RunAllAsync(h => h.UsePostgres(TestPostgres.ConnectionString, o => o.Schema = _schema).UsePostgresStreamState());

    [Fact]
    public async Task TwoHosts_ShareThePartitionsOfARekeyAfterState_AndOneTakesOverWhenTheOtherStops_CountingEveryEventOnce()
    {
        // Fewer events than the in-memory scenario: each append is a round trip.
        const int orders = 80;
        var outputs = new ConcurrentQueue<string>();
        Action<HeraldBuilder> configure = h =>
        {
            PartitionScenario.Configure(h);
            h.UsePostgres(TestPostgres.ConnectionString, o => o.Schema = _schema).UsePostgresStreamState()
                .AddStream("rekey-shared", b => RepartitionScenario.Build(b, outputs), RepartitionScenario.Options(4));
        };
        var first = await ProcessorScenario.StartHostAsync(configure);
        var second = await ProcessorScenario.StartHostAsync(configure);
        try
        {
            var a = first.Services.GetRequiredService<StreamProcessors>()["rekey-shared"];
            var b = second.Services.GetRequiredService<StreamProcessors>()["rekey-shared"];
            await Eventually.UntilAsync(() => a.OwnedPartitions.Count == 2 && b.OwnedPartitions.Count == 2, "the two hosts hold two partitions each");

            // Each host's second stage takes records the other host's partitions wrote (found by its poll).
            var half = await PartitionScenario.AppendAsync(first.Services, 0, orders / 2);
            await Task.WhenAll(a.WaitForPositionAsync(half), b.WaitForPositionAsync(half)).WaitAsync(TimeSpan.FromSeconds(60));
            Assert.Equal(2, a.OwnedPartitions.Count);
            Assert.Equal(2, b.OwnedPartitions.Count);

            await second.StopAsync();
            await Eventually.UntilAsync(() => a.OwnedPartitions.Count == 4, "the first host takes over every partition");
            var head = await PartitionScenario.AppendAsync(first.Services, orders / 2, orders);
            await a.WaitForPositionAsync(head).WaitAsync(TimeSpan.FromSeconds(60));

            // The same as one task over the same events in a fresh in-memory host.
            using var reference = await ProcessorScenario.StartHostAsync(PartitionScenario.Configure);
            var referenceHead = await PartitionScenario.AppendAsync(reference.Services, 0, orders);
            var expected = await RepartitionScenario.RunAsync(reference.Services, "reference", 1, referenceHead);
            var (sums, windows) = await RepartitionScenario.StateAsync(a);
            Assert.Equal(expected.SumsByRemainder, sums);
            Assert.Equal(expected.Windows, windows);
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
