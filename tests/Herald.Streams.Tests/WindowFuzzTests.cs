using System.Globalization;

namespace Herald.Streams.Tests;

/// <summary>
/// Seeded randomized runs of windowed aggregates and a windowed join against brute-force models written from
/// docs/streams.md: a few hundred events of a handful of keys, event times mostly increasing with out-of-order jitter
/// (some beyond the allowed out-of-orderness + grace, so late). After every input, what the engine emitted (results, late
/// records) must equal what the model says that input emits. Each seed also runs with a crash between commits and a
/// restart from the committed state, whose committed outputs and state must equal the uninterrupted run's.
/// </summary>
public sealed class WindowFuzzTests
{
    private const int Events = 300;
    private static readonly long Second = TimeSpan.TicksPerSecond;
    private static readonly long Epoch = DateTimeOffset.UnixEpoch.UtcTicks;
    private static readonly long T0 = TestDriver.At(0).UtcTicks;
    private static readonly string[] Keys = ["a", "b", "c", "d"];

    public static TheoryData<int> Seeds => [.. Enumerable.Range(1, 20)];

    [Theory]
    [MemberData(nameof(Seeds))]
    public void TumblingWindows_CountAndSumPerKey_MatchTheModel(int seed) =>
        TimeWindows(seed, size: 60 * Second, advance: 60 * Second);

    [Theory]
    [MemberData(nameof(Seeds))]
    public void HoppingWindows_SumPerKey_MatchTheModel(int seed) =>
        TimeWindows(seed, size: 90 * Second, advance: 30 * Second);

    [Theory]
    [MemberData(nameof(Seeds))]
    public void SessionWindows_PerKey_MatchTheModel(int seed)
    {
        var rng = new Random(seed);
        var (ooo, grace, retention, suppress) = Settings(rng);
        var gap = 40 * Second;
        var inputs = Generate(rng, twoSides: false);
        var expected = SessionModel(inputs, gap, ooo, grace, suppress);
        Check($"sessions seed {seed} (out-of-order {ooo / Second} s, grace {grace / Second} s, retention {retention}, suppress {suppress})", inputs, expected, rng, ooo, lines =>
        {
            var builder = new StreamBuilder();
            var windowed = builder.Stream<FuzzEvent>().GroupByKey().WindowedBy(SessionWindows.WithGap(TimeSpan.FromTicks(gap)).WithGrace(TimeSpan.FromTicks(grace)));
            return Aggregate(builder, windowed, lines, retention, suppress);
        });
    }

    [Theory]
    [MemberData(nameof(Seeds))]
    public void WindowedJoin_MatchesTheModel(int seed)
    {
        var rng = new Random(seed);
        var (ooo, grace, _, _) = Settings(rng);
        var within = 45 * Second;
        var kind = (JoinKind)(seed % 3);
        var inputs = Generate(rng, twoSides: true);
        var expected = JoinModel(inputs, kind, within, ooo, grace);
        Check($"{kind} join seed {seed} (out-of-order {ooo / Second} s, grace {grace / Second} s)", inputs, expected, rng, ooo, lines =>
        {
            var builder = new StreamBuilder();
            var left = builder.Stream<FuzzEvent>();
            var right = builder.Stream<FuzzPayment>();
            var window = JoinWindows.Of(TimeSpan.FromTicks(within)).WithGrace(TimeSpan.FromTicks(grace));
            var joined = kind switch
            {
                JoinKind.Inner => left.Join(right, (l, r) => Joined(l, r), window),
                JoinKind.Left => left.LeftJoin(right, (l, r) => Joined(l, r), window),
                _ => left.OuterJoin(right, Joined, window),
            };
            joined.To(StreamSinks.Callback<string, string>(o => lines.Add($"join {o.Key} {o.Value} @{Fmt(o.EventTime)}")));
            return builder.Build();
        });
    }

    private static void TimeWindows(int seed, long size, long advance)
    {
        var rng = new Random(seed);
        var (ooo, grace, retention, suppress) = Settings(rng);
        var inputs = Generate(rng, twoSides: false);
        var expected = TimeWindowModel(inputs, size, advance, ooo, grace, suppress);
        Check($"windows of {size / Second} s every {advance / Second} s, seed {seed} (out-of-order {ooo / Second} s, grace {grace / Second} s, retention {retention}, suppress {suppress})", inputs, expected, rng, ooo, lines =>
        {
            var builder = new StreamBuilder();
            WindowDefinition windows = size == advance
                ? TumblingWindows.Of(TimeSpan.FromTicks(size)).WithGrace(TimeSpan.FromTicks(grace))
                : HoppingWindows.Of(TimeSpan.FromTicks(size), TimeSpan.FromTicks(advance)).WithGrace(TimeSpan.FromTicks(grace));
            return Aggregate(builder, builder.Stream<FuzzEvent>().GroupByKey().WindowedBy(windows), lines, retention, suppress);
        });
    }

    private static StreamTopology Aggregate(StreamBuilder builder, IWindowedStream<string, FuzzEvent> windowed, List<string> lines, TimeSpan retention, bool suppress)
    {
        windowed = windowed.RetainClosedWindowsFor(retention)
            .WithLateOutput(s => s.To(StreamSinks.Callback<string, FuzzEvent>(o => lines.Add($"late {o.Key} #{o.Value.Id} @{Fmt(o.EventTime)}"))));
        if (suppress)
        {
            windowed = windowed.SuppressUntilWindowCloses();
        }

        windowed.Aggregate(() => new FuzzAggregate(0, 0), (_, e, a) => new FuzzAggregate(a.Count + 1, a.Sum + e.Amount), "fuzz", (_, a, b) => new FuzzAggregate(a.Count + b.Count, a.Sum + b.Sum))
            .ToStream()
            .To(StreamSinks.Callback<Windowed<string>, FuzzAggregate>(o => lines.Add(Window(o.Key.Key, o.Key.Window.Start.UtcTicks, o.Key.Window.End.UtcTicks, o.Value.Count, o.Value.Sum, o.EventTime.UtcTicks))));
        return builder.Build();
    }

    private static (long OutOfOrder, long Grace, TimeSpan Retention, bool Suppress) Settings(Random rng) =>
        (rng.Next(0, 4) * 15 * Second, rng.Next(0, 3) * 15 * Second, new[] { TimeSpan.Zero, TimeSpan.FromMinutes(1), TimeSpan.FromHours(1) }[rng.Next(3)], rng.Next(2) == 0);

    /// <summary>Times on a 5-second grid, so they often fall on window bounds and exactly at the watermark.</summary>
    private static List<Input> Generate(Random rng, bool twoSides)
    {
        var inputs = new List<Input>(Events);
        var now = T0;
        for (var i = 0; i < Events; i++)
        {
            now += rng.Next(0, 4) * 5 * Second;
            var roll = rng.NextDouble();
            var time = roll < 0.7 ? now : roll < 0.92 ? now - (rng.Next(0, 25) * 5 * Second) : now - (rng.Next(0, 120) * 5 * Second);
            inputs.Add(new Input(i, Keys[rng.Next(Keys.Length)], twoSides && rng.Next(2) == 0, time, rng.Next(1, 10)));
        }

        return inputs;
    }

    /// <summary>
    /// Runs the inputs once without interruption and once with commits every few inputs and a crash (what was not committed
    /// is lost) and restart from the committed state; the committed lines of each input must equal the model's.
    /// </summary>
    private static void Check(string what, List<Input> inputs, List<string>[] expected, Random rng, long outOfOrder, Func<List<string>, StreamTopology> build)
    {
        var straight = Run(what, inputs, expected, outOfOrder, build, commitEvery: 1, crashes: []);
        var commitEvery = rng.Next(5, 40);

        // Two crashes, each between commits (so the restart replays the inputs after the last one).
        int[] crashes = [.. new[] { rng.Next(20, inputs.Count / 2), rng.Next(inputs.Count / 2, inputs.Count - 1) }.Select(c => (c + 1) % commitEvery == 0 ? c - 1 : c)];
        var crashed = Run(what + $" with commits every {commitEvery} and crashes after inputs {string.Join(", ", crashes)}", inputs, expected, outOfOrder, build, commitEvery, crashes);
        Assert.Equal(straight.OrderBy(e => e.Key).ToList(), crashed.OrderBy(e => e.Key).ToList());
    }

    private static IReadOnlyDictionary<(string Store, string Key), string> Run(
        string what, List<Input> inputs, List<string>[] expected, long outOfOrder, Func<List<string>, StreamTopology> build, int commitEvery, int[] crashes)
    {
        var lines = new List<string>();
        var driver = new TestDriver(build(lines), TimeSpan.FromTicks(outOfOrder));
        var committed = new List<string>?[inputs.Count];
        var pending = new List<(int Step, List<string> Lines)>();
        var checkpoint = 0;
        var crashed = new HashSet<int>();
        for (var i = 0; i < inputs.Count; i++)
        {
            var input = inputs[i];
            driver.Send<object>(input.Key, input.Right ? new FuzzPayment(input.Id) : new FuzzEvent(input.Id, input.Amount), new DateTimeOffset(input.Time, TimeSpan.Zero));
            lines.AddRange(driver.Late.Select(l => $"late {l.Key} #{Id(l.Value)} @{Fmt(l.EventTime)} wm={Fmt(l.Watermark)}"));
            driver.Late.Clear();
            lines.Sort(StringComparer.Ordinal);
            pending.Add((i, [.. lines]));
            lines.Clear();
            if ((i + 1) % commitEvery == 0 || i == inputs.Count - 1)
            {
                driver.Commit();
                foreach (var (step, stepLines) in pending)
                {
                    Assert.True(committed[step] is null, $"{what}: input {step} committed twice");
                    committed[step] = stepLines;
                }

                pending.Clear();
                checkpoint = i + 1;
            }

            if (crashes.Contains(i) && crashed.Add(i))
            {
                Assert.NotEmpty(pending); // something to replay
                pending.Clear();
                driver.Restart();
                i = checkpoint - 1;
            }
        }

        for (var step = 0; step < inputs.Count; step++)
        {
            var actual = committed[step] ?? [];
            if (!actual.SequenceEqual(expected[step]))
            {
                var input = inputs[step];
                Assert.Fail(
                    $"{what}: first difference at input {step} ({(input.Right ? "right" : "left")} #{input.Id} key {input.Key} @{Fmt(input.Time)}).\n" +
                    $"  expected: [{string.Join("; ", expected[step])}]\n  engine:   [{string.Join("; ", actual)}]");
            }
        }

        return driver.Committed;
    }

    /// <summary>Tumbling and hopping windows as docs/streams.md states them.</summary>
    private static List<string>[] TimeWindowModel(List<Input> inputs, long size, long advance, long ooo, long grace, bool suppress)
    {
        var windows = new Dictionary<(string Key, long Start), List<Input>>();
        var closed = new HashSet<(string Key, long Start)>();
        return Model(inputs, ooo, (e, watermark, lines) =>
        {

            // Aligned to the Unix epoch, [start, end): every start s = epoch + k * advance with s <= t < s + size.
            var late = false;
            for (var start = e.Time - ((e.Time - Epoch) % advance); start + size > e.Time; start -= advance)
            {
                if (start + size + grace <= watermark)
                {
                    late = true; // a window closes when the watermark reaches end + grace; a record of a closed window is late
                    continue;
                }

                var members = windows.TryGetValue((e.Key, start), out var list) ? list : windows[(e.Key, start)] = [];
                members.Add(e);
                if (!suppress)
                {
                    lines.Add(Window(e.Key, start, start + size, members.Count, members.Sum(m => m.Amount), e.Time)); // every update
                }
            }

            if (late)
            {
                lines.Add($"late {e.Key} #{e.Id} @{Fmt(e.Time)}"); // once, however many of its windows closed
            }

            foreach (var ((key, start), members) in windows)
            {
                if (start + size + grace <= watermark && closed.Add((key, start)) && suppress)
                {
                    lines.Add(Window(key, start, start + size, members.Count, members.Sum(m => m.Amount), start + size)); // once, at its end
                }
            }

        });
    }

    /// <summary>Session windows as docs/streams.md states them: the sessions of a key are its on-time events split where two neighbours are more than the gap apart.</summary>
    private static List<string>[] SessionModel(List<Input> inputs, long gap, long ooo, long grace, bool suppress)
    {
        var accepted = Keys.ToDictionary(k => k, _ => new List<Input>());
        var closed = new HashSet<(string Key, long Start, long End)>();
        return Model(inputs, ooo, (e, watermark, lines) =>
        {
            if (e.Time + grace < watermark)
            {
                lines.Add($"late {e.Key} #{e.Id} @{Fmt(e.Time)}");
            }
            else
            {
                accepted[e.Key].Add(e);
                if (!suppress)
                {
                    var session = Sessions(accepted[e.Key], gap).Single(s => s.Contains(e));
                    lines.Add(Window(e.Key, session[0].Time, session[^1].Time, session.Count, session.Sum(m => m.Amount), e.Time)); // its merged state
                }
            }

            foreach (var (key, events) in accepted)
            {
                foreach (var session in Sessions(events, gap))
                {
                    var (start, end) = (session[0].Time, session[^1].Time);
                    if (end + gap + grace < watermark && closed.Add((key, start, end)) && suppress)
                    {
                        lines.Add(Window(key, start, end, session.Count, session.Sum(m => m.Amount), end));
                    }
                }
            }

        });
    }

    /// <summary>Runs a model's step for each input with the watermark then (the largest event time seen, its own included, minus AllowedOutOfOrderness); the lines of each input, sorted.</summary>
    private static List<string>[] Model(List<Input> inputs, long ooo, Action<Input, long, List<string>> step)
    {
        var result = new List<string>[inputs.Count];
        var streamTime = long.MinValue;
        for (var i = 0; i < inputs.Count; i++)
        {
            streamTime = Math.Max(streamTime, inputs[i].Time);
            var lines = new List<string>();
            step(inputs[i], streamTime - ooo, lines);
            lines.Sort(StringComparer.Ordinal);
            result[i] = lines;
        }

        return result;
    }

    private static List<List<Input>> Sessions(List<Input> events, long gap)
    {
        var sessions = new List<List<Input>>();
        foreach (var e in events.OrderBy(e => e.Time))
        {
            if (sessions.Count > 0 && e.Time - sessions[^1][^1].Time <= gap)
            {
                sessions[^1].Add(e);
            }
            else
            {
                sessions.Add([e]);
            }
        }

        return sessions;
    }

    /// <summary>A windowed stream-stream join as docs/streams.md states it.</summary>
    private static List<string>[] JoinModel(List<Input> inputs, JoinKind kind, long within, long ooo, long grace)
    {
        var accepted = new List<Input>();
        var matched = new HashSet<int>();
        var expired = new HashSet<int>();
        return Model(inputs, ooo, (e, watermark, lines) =>
        {
            if (e.Time + grace < watermark)
            {
                lines.Add($"late {e.Key} #{e.Id} @{Fmt(e.Time)} wm={Fmt(watermark)}");
            }
            else
            {
                foreach (var partner in accepted.Where(p => p.Right != e.Right && p.Key == e.Key && Math.Abs(p.Time - e.Time) <= within))
                {
                    var (l, r) = e.Right ? (partner, e) : (e, partner);
                    lines.Add($"join {e.Key} {Joined(new FuzzEvent(l.Id, 0), new FuzzPayment(r.Id))} @{Fmt(Math.Max(l.Time, r.Time))}");
                    matched.Add(l.Id);
                    matched.Add(r.Id);
                }

                accepted.Add(e);
            }

            foreach (var a in accepted)
            {
                // Emitted with a default partner when its window closes (the watermark passes time + within + grace), if it met none.
                if (a.Time + within + grace < watermark && expired.Add(a.Id) && !matched.Contains(a.Id)
                    && (a.Right ? kind == JoinKind.Outer : kind != JoinKind.Inner))
                {
                    var value = a.Right ? Joined(null, new FuzzPayment(a.Id)) : Joined(new FuzzEvent(a.Id, 0), null);
                    lines.Add($"join {a.Key} {value} @{Fmt(a.Time + within)}");
                }
            }

        });
    }

    private static string Joined(FuzzEvent? left, FuzzPayment? right) => $"{(left is null ? "-" : "L" + left.Id)}|{(right is null ? "-" : "R" + right.Id)}";

    private static string Window(string key, long start, long end, long count, long sum, long time) =>
        $"out {key} [{Fmt(start)},{Fmt(end)}) n={count} sum={sum} @{Fmt(time)}";

    private static string Fmt(DateTimeOffset time) => Fmt(time.UtcTicks);

    private static string Fmt(long ticks) => ((ticks - T0) / (double)Second).ToString(CultureInfo.InvariantCulture);

    private static int Id(object? value) => value switch
    {
        FuzzEvent e => e.Id,
        FuzzPayment p => p.Id,
        _ => -1,
    };

    private enum JoinKind
    {
        Inner,
        Left,
        Outer,
    }

    private sealed record Input(int Id, string Key, bool Right, long Time, long Amount);
}

public sealed record FuzzEvent(int Id, long Amount);

public sealed record FuzzPayment(int Id);

public sealed record FuzzAggregate(long Count, long Sum);
