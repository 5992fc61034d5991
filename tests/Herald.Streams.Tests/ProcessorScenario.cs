using Herald.EventSourcing;
using Herald.Hosting;
using Herald.Messages;
using Herald.Reliability.DeadLetters;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;

namespace Herald.Streams.Tests;

/// <summary>
/// A windowed aggregation over $all that fails mid-stream (a commit is refused, as a crash between commits would leave
/// it) and resumes in a new host: the resumed result must equal the uninterrupted one, with every event counted once.
/// </summary>
internal static class ProcessorScenario
{
    public const int Orders = 240;
    private static readonly DateTimeOffset T0 = new(2026, 1, 1, 0, 0, 0, TimeSpan.Zero);
    private static readonly string[] Products = ["p0", "p1", "p2", "p3"];

    public static Order OrderAt(int i) => new($"o{i}", Products[i % Products.Length], 1 + (i % 7), T0.AddSeconds(20 * i));

    public static async Task<IHost> StartHostAsync(Action<HeraldBuilder> configure)
    {
        var builder = Host.CreateApplicationBuilder();
        builder.Services.AddHerald(h =>
        {
            h.AddMessageType<Order>("stream-test-order-placed");
            h.AddMessageType<WindowRevenue>("stream-test-window-revenue");
            configure(h);
        });
        var host = builder.Build();
        await host.StartAsync();
        return host;
    }

    public static StreamTopology Topology(Func<bool>? failCommit = null)
    {
        var builder = new StreamBuilder();
        var windowed = builder.Stream<Order>(o => o.PlacedAt).GroupBy(o => o.ProductId).WindowedBy(TumblingWindows.Of(TimeSpan.FromMinutes(5))).RetainClosedWindowsFor(TimeSpan.FromDays(1));
        windowed.Aggregate(() => 0m, (_, o, sum) => sum + o.Amount, "revenue");
        windowed.SuppressUntilWindowCloses().Count("final-counts").ToStream()
            .Map((w, count) => new WindowRevenue(w.Key, w.Window.Start, count))
            .To(StreamSinks.EventStore<Windowed<string>, WindowRevenue>((w, _) => "windowcount-" + w.Key));
        if (failCommit is not null)
        {
            builder.Stream<Order>(o => o.PlacedAt).To(StreamSinks.Callback<string, Order>(_ =>
            {
                if (failCommit())
                {
                    throw new InvalidOperationException("Simulated crash: this commit is refused.");
                }
            }));
        }

        return builder.Build();
    }

    public static async Task RunAsync(Action<HeraldBuilder> configure, bool sharedHost = false)
    {
        var first = await StartHostAsync(configure);
        var events = first.Services.GetRequiredService<IEventStore>();
        var envelopes = first.Services.GetRequiredService<EnvelopeFactory>();

        // The last order's own position, not GetLastPositionAsync: on PostgreSQL an older transaction elsewhere on the
        // server (another test's) holds the readable head back, and that returns what is readable after 10 s.
        var head = 0L;
        for (var i = 0; i < Orders; i += 40)
        {
            for (var j = i; j < i + 40; j++)
            {
                head = Math.Max(head, (await events.AppendAsync("order-" + j, ExpectedVersion.NoStream, [envelopes.Create(OrderAt(j))])).LastPosition);
            }
        }

        var options = new StreamProcessorOptions { CommitEvery = 30 };

        // Run 1: the third commit is refused (its sink throws on the 61st order); two commits (60 events) are stored.
        var written = 0;
        await using (var processor = new StreamProcessor("revenue", Topology(() => ++written > 60), first.Services, options))
        {
            await processor.StartAsync();
            var failure = await Assert.ThrowsAsync<InvalidOperationException>(() => processor.Completion.WaitAsync(TimeSpan.FromSeconds(30)));
            Assert.Contains("Simulated crash", failure.ToString(), StringComparison.Ordinal);
        }

        var checkpoint = await first.Services.GetRequiredService<ICheckpointStore>().GetCheckpointAsync("stream:revenue");
        Assert.NotNull(checkpoint);
        Assert.True(checkpoint.Value > 0 && checkpoint.Value < head, $"checkpoint {checkpoint} should be inside (0, {head})"); // stopped mid-stream

        // Run 2, in a new host on the same database (or the same host for the in-memory stores).
        var second = sharedHost ? first : await StartHostAsync(configure);
        try
        {
            await using var resumed = new StreamProcessor("revenue", Topology(), second.Services, options);
            await resumed.StartAsync();
            await resumed.WaitForPositionAsync(head).WaitAsync(TimeSpan.FromSeconds(60));

            var orders = Enumerable.Range(0, Orders).Select(OrderAt).ToList();
            foreach (var product in Products)
            {
                var expected = orders.Where(o => o.ProductId == product)
                    .GroupBy(o => Start(o.PlacedAt))
                    .ToDictionary(g => g.Key, g => (Sum: g.Sum(o => o.Amount), Count: g.LongCount()));
                var revenue = await resumed.QueryWindowsAsync<string, decimal>("revenue", product, DateTimeOffset.MinValue, DateTimeOffset.MaxValue);
                Assert.Equal(expected.Keys.Order(), revenue.Select(r => r.Key.Window.Start));
                Assert.All(revenue, r => Assert.Equal(expected[r.Key.Window.Start].Sum, r.Value));
                var counts = await resumed.QueryWindowsAsync<string, long>("final-counts", product, DateTimeOffset.MinValue, DateTimeOffset.MaxValue);
                Assert.All(counts, c => Assert.Equal(expected[c.Key.Window.Start].Count, c.Value));

                // Every window but the last has closed; each was appended once, across the failure and the restart.
                var appended = await ReadAsync<WindowRevenue>(second, "windowcount-" + product);
                Assert.Equal(expected.Keys.Order().SkipLast(1), appended.Select(a => a.WindowStart));
                Assert.All(appended, a => Assert.Equal(expected[a.WindowStart].Count, a.Count));
            }
        }
        finally
        {
            if (!sharedHost)
            {
                await second.StopAsync();
                second.Dispose();
            }

            await first.StopAsync();
            first.Dispose();
        }
    }

    public static async Task<List<T>> ReadAsync<T>(IHost host, string stream)
    {
        var events = host.Services.GetRequiredService<IEventStore>();
        var serializer = host.Services.GetRequiredService<IMessageSerializer>();
        var list = new List<T>();
        await foreach (var recorded in events.ReadStreamAsync(stream))
        {
            list.Add((T)serializer.Deserialize(recorded.Envelope.Body, typeof(T)));
        }

        return list;
    }

    private static DateTimeOffset Start(DateTimeOffset time) => new(time.UtcTicks - (time.UtcTicks % TimeSpan.FromMinutes(5).Ticks), TimeSpan.Zero);
}

public sealed record WindowRevenue(string ProductId, DateTimeOffset WindowStart, long Count);
