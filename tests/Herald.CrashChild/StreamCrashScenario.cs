using Herald.Hosting;
using Herald.Streams;

namespace Herald.CrashChild;

/// <summary>
/// The windowed aggregation of the stream crash tests (issue 15), shared by the child (Herald.CrashChild stream-sqlite /
/// stream-postgres), which runs it until it is killed, and by the tests, which link this file to append its seeded events,
/// run it uninterrupted on a fresh database and compute its expected result in memory.
/// </summary>
internal static class StreamCrashScenario
{
    /// <summary>The processor's name: its checkpoint is <c>stream:crash-revenue</c>.</summary>
    public const string Name = "crash-revenue";

    /// <summary>The windowed sum per product, every update (no side output: late records go to the processor's late handler).</summary>
    public const string RevenueStore = "revenue";

    /// <summary>The windowed count per product, emitted once per window when it closes.</summary>
    public const string CountStore = "final-counts";

    /// <summary>The stream the late records of the count go to.</summary>
    public const string LateStream = "crashlate-orders";

    public const int OrderCount = 2000;
    public const int OrdersPerStream = 50;
    public static readonly DateTimeOffset T0 = new(2026, 3, 1, 8, 0, 0, TimeSpan.Zero);
    public static readonly TimeSpan WindowSize = TimeSpan.FromMinutes(1);
    public static readonly TimeSpan Grace = TimeSpan.FromSeconds(30);
    public static readonly TimeSpan OutOfOrderness = TimeSpan.FromMinutes(1);

    /// <summary>Small commits, so a kill lands among many of them (some in the middle of one).</summary>
    public static StreamProcessorOptions Options { get; } = new()
    {
        CommitEvery = 20,
        BatchSize = 100,
        AllowedOutOfOrderness = OutOfOrderness,
    };

    /// <summary>The same with four partitions, for the variant that re-keys the closed windows' counts (a second stage).</summary>
    public static StreamProcessorOptions RekeyOptions { get; } = Options with { Partitions = 4 };

    /// <summary>The variant's count of closed windows per parity of their count: a table after a re-key after state.</summary>
    public const string ParityStore = "windows-by-parity";

    /// <summary>The stream each update of a parity's count is appended to (the variant).</summary>
    public static string ParityStream(string parity) => "crashparity-" + parity;

    /// <summary>The stream each closed window's count is appended to.</summary>
    public static string WindowStream(string product) => "crashwindow-" + product;

    /// <summary>
    /// The seeded input, in append order: one order every 2 s of event time over 66 minutes, one in ten up to 40 s out of
    /// order (within the allowed out-of-orderness, so on time), and every 250th 10 minutes late (its window has closed).
    /// </summary>
    public static IReadOnlyList<(CrashOrder Order, bool Late)> Orders()
    {
        var random = new Random(15);
        var orders = new List<(CrashOrder, bool)>(OrderCount);
        for (var i = 0; i < OrderCount; i++)
        {
            var time = T0.AddSeconds(2 * i);
            var late = i >= 500 && i % 250 == 0;
            if (late)
            {
                time -= TimeSpan.FromMinutes(10);
            }
            else if (random.Next(10) == 0)
            {
                time -= TimeSpan.FromSeconds(random.Next(1, 40));
            }

            var product = "p" + random.Next(5).ToString(System.Globalization.CultureInfo.InvariantCulture);
            orders.Add((new CrashOrder($"o{i}", product, random.Next(100, 10_000) / 100m, time), late));
        }

        return orders;
    }

    /// <summary>Registers the scenario's message types.</summary>
    public static HeraldBuilder AddMessageTypes(HeraldBuilder builder) => builder
        .AddMessageType<CrashOrder>("crash-stream-order-placed")
        .AddMessageType<CrashWindowCount>("crash-stream-window-count")
        .AddMessageType<CrashLateOrder>("crash-stream-late-order")
        .AddMessageType<CrashParityCount>("crash-stream-parity-count");

    /// <summary>
    /// The topology: per product, 1-minute tumbling windows with 30 s of grace; the sum of every update, and the count of
    /// each window once it closes, appended to the event store (exactly once with the state), late records appended too.
    /// <paramref name="pace"/> (the child's) slows every event down, so a kill lands while it is processing.
    /// </summary>
    /// With <paramref name="rekey"/>, the closed windows' counts are also re-keyed by their parity and counted again (a
    /// second stage: with several partitions, through the processor's repartition log), each update appended.
    public static StreamTopology Topology(TimeSpan pace = default, bool rekey = false)
    {
        var builder = new StreamBuilder();
        var windowed = builder.Stream<CrashOrder>(o => o.PlacedAt)
            .GroupBy(o => o.ProductId)
            .WindowedBy(TumblingWindows.Of(WindowSize).WithGrace(Grace))
            .RetainClosedWindowsFor(TimeSpan.FromDays(1));
        windowed.Aggregate(() => 0m, (_, o, sum) => sum + o.Amount, RevenueStore);
        var counts = windowed.SuppressUntilWindowCloses()
            // Another type than the input's: appended as CrashOrder, a late record would come back from $all as input.
            .WithLateOutput(late => late.Map(o => new CrashLateOrder(o.OrderId, o.PlacedAt)).To(StreamSinks.EventStore<string, CrashLateOrder>((_, _) => LateStream)))
            .Count(CountStore)
            .ToStream()
            .Map((w, count) => new CrashWindowCount(w.Key, w.Window.Start, count));
        counts.To(StreamSinks.EventStore<Windowed<string>, CrashWindowCount>((w, _) => WindowStream(w.Key)));
        if (rekey)
        {
            counts.GroupBy(c => c.Count % 2 == 0 ? "even" : "odd").Count(ParityStore).ToStream()
                .Map((parity, n) => new CrashParityCount(parity, n))
                .To(StreamSinks.EventStore<string, CrashParityCount>((parity, _) => ParityStream(parity)));
        }

        if (pace > TimeSpan.Zero)
        {
            // Last, so the operators above keep the names (and stores) they have without it; with the same event time, as
            // the stream time (and so the watermark) is the largest event time any source sees.
            builder.Stream<CrashOrder>(o => o.PlacedAt).Peek((_, _) => Thread.Sleep(pace));
        }

        return builder.Build();
    }
}

/// <summary>An order of the crash scenario.</summary>
internal sealed record CrashOrder(string OrderId, string ProductId, decimal Amount, DateTimeOffset PlacedAt);

/// <summary>An order that came after its window closed, appended to <see cref="StreamCrashScenario.LateStream"/>.</summary>
internal sealed record CrashLateOrder(string OrderId, DateTimeOffset PlacedAt);

/// <summary>How many closed windows had a count of this parity so far (the re-keyed variant).</summary>
internal sealed record CrashParityCount(string Parity, long Windows);

/// <summary>The count of one product's window, appended when the window closes.</summary>
internal sealed record CrashWindowCount(string ProductId, DateTimeOffset WindowStart, long Count);
