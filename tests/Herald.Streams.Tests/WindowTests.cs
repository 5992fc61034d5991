using Herald.Streams.Topology;

namespace Herald.Streams.Tests;

public sealed class WindowTests
{
    private static readonly TimeSpan Five = TimeSpan.FromMinutes(5);

    private static (TestDriver Driver, List<StreamOutput<Windowed<string>, decimal>> Out, List<StreamOutput<string, Order>> Late) Revenue(
        WindowDefinition windows, bool suppress, TimeSpan outOfOrder, bool lateOutput = true)
    {
        var builder = new StreamBuilder();
        var windowed = builder.Stream<Order>(o => o.PlacedAt).GroupBy(o => o.ProductId).WindowedBy(windows);
        var late = new List<StreamOutput<string, Order>>();
        if (suppress)
        {
            windowed = windowed.SuppressUntilWindowCloses();
        }

        if (lateOutput)
        {
            windowed = windowed.WithLateOutput(s => s.To(Collect.Into(late)));
        }

        var outputs = new List<StreamOutput<Windowed<string>, decimal>>();
        windowed.Aggregate(() => 0m, (_, o, sum) => sum + o.Amount, "revenue", (_, a, b) => a + b).ToStream().To(Collect.Into(outputs));
        return (new TestDriver(builder.Build(), outOfOrder), outputs, late);
    }

    private static Order At(string product, decimal amount, double minutes) => new(Guid.NewGuid().ToString(), product, amount, TestDriver.At(minutes));

    private static TestDriver Send(TestDriver driver, Order order) => driver.Send(order.OrderId, order, DateTimeOffset.MinValue);

    [Fact]
    public void RevenuePerProductIn5MinuteTumblingWindows_SeedExample_EmitsFinalSumsWhenWindowsClose()
    {
        var (driver, outputs, late) = Revenue(TumblingWindows.Of(Five).WithGrace(TimeSpan.FromMinutes(1)), suppress: true, outOfOrder: TimeSpan.FromMinutes(2));

        // Out of order within the allowed 2 minutes, with explicit event times (the selector reads PlacedAt).
        Send(driver, At("apple", 10, 0.5));
        Send(driver, At("pear", 7, 1));
        Send(driver, At("apple", 5, 4.9));
        Send(driver, At("apple", 1, 3)); // out of order, still on time
        Send(driver, At("apple", 2, 6));
        Assert.Empty(outputs); // watermark 6 − 2 = 4 < 5 + 1: nothing closed yet
        Send(driver, At("pear", 3, 8.5)); // watermark 6.5 ≥ 6: [0, 5) closes
        Assert.Equal(
            [("apple", 0d, 16m), ("pear", 0d, 7m)],
            outputs.Select(o => (o.Key.Key, (o.Key.Window.Start - TestDriver.At(0)).TotalMinutes, o.Value)).OrderBy(x => x.Key));

        Send(driver, At("apple", 100, 2)); // window [0, 5) closed: late, to the side output
        Assert.Single(late);
        Assert.Equal(100m, late[0].Value.Amount);

        Send(driver, At("apple", 1, 30)); // closes [5, 10)
        Assert.Equal(4, outputs.Count);
        Assert.Contains(outputs, o => o.Key.Key == "apple" && o.Key.Window.Start == TestDriver.At(5) && o.Value == 2m);
        Assert.Contains(outputs, o => o.Key.Key == "pear" && o.Key.Window.Start == TestDriver.At(5) && o.Value == 3m);
        Assert.All(outputs, o => Assert.Equal(o.Key.Window.End, o.EventTime));
    }

    [Fact]
    public void TumblingWindows_WithoutSuppression_EmitEveryUpdate()
    {
        var (driver, outputs, _) = Revenue(TumblingWindows.Of(Five), suppress: false, outOfOrder: TimeSpan.Zero);

        Send(driver, At("a", 1, 1));
        Send(driver, At("a", 2, 2));
        Send(driver, At("a", 4, 7));

        Assert.Equal([1m, 3m, 4m], outputs.Select(o => o.Value));
        Assert.Equal([TestDriver.At(0), TestDriver.At(0), TestDriver.At(5)], outputs.Select(o => o.Key.Window.Start));
    }

    [Fact]
    public void GracePeriod_AcceptsAnEventAfterTheWindowEndUntilEndPlusGrace()
    {
        var (driver, outputs, late) = Revenue(TumblingWindows.Of(Five).WithGrace(TimeSpan.FromMinutes(2)), suppress: false, outOfOrder: TimeSpan.Zero);

        Send(driver, At("a", 1, 1));
        Send(driver, At("a", 1, 6.5)); // watermark 6.5 < 5 + 2
        Send(driver, At("a", 10, 4)); // still within grace
        Send(driver, At("a", 1, 7)); // watermark 7 = 5 + 2: [0, 5) closes
        Send(driver, At("a", 10, 4.5)); // late now

        Assert.Equal(11m, outputs.Last(o => o.Key.Window.Start == TestDriver.At(0)).Value);
        Assert.Single(late);
    }

    /// <summary>
    /// A grace period or retention meant as "forever" (TimeSpan.MaxValue, which the build accepts) overflowed the window's
    /// close time (end + grace, + retention) to a negative tick count: every record was late and nothing was aggregated, or
    /// a closed window was dropped at once instead of being retained.
    /// </summary>
    [Fact]
    public void AGraceOrRetentionOfTimeSpanMaxValue_KeepsWindowsOpenOrRetainedInsteadOfOverflowing()
    {
        var (driver, outputs, late) = Revenue(TumblingWindows.Of(Five).WithGrace(TimeSpan.MaxValue), suppress: false, outOfOrder: TimeSpan.Zero);
        Send(driver, At("a", 1, 1));
        Send(driver, At("a", 2, 600));
        Send(driver, At("a", 4, 2)); // within the endless grace
        Assert.Empty(late);
        Assert.Equal([1m, 2m, 5m], outputs.Select(o => o.Value));

        var builder = new StreamBuilder();
        builder.Stream<Order>(o => o.PlacedAt).GroupBy(o => o.ProductId).WindowedBy(TumblingWindows.Of(Five)).RetainClosedWindowsFor(TimeSpan.MaxValue).Count("counts");
        var retained = new TestDriver(builder.Build());
        Send(retained, At("a", 1, 1));
        Send(retained, At("a", 1, 600)); // closes [0, 5), which stays
        Assert.Equal(2, retained.Task.Store("counts").Count);
    }

    [Fact]
    public void LateEvents_WithoutASideOutput_GoToTheProcessorsLateHandler()
    {
        var (driver, outputs, _) = Revenue(TumblingWindows.Of(Five), suppress: false, outOfOrder: TimeSpan.Zero, lateOutput: false);

        Send(driver, At("a", 1, 6));
        Send(driver, At("a", 9, 1));

        Assert.Single(outputs);
        var late = Assert.Single(driver.Late);
        Assert.StartsWith("window-aggregate-", late.Operator, StringComparison.Ordinal);
        Assert.Equal(TestDriver.At(1), late.EventTime);
        Assert.Equal(TestDriver.At(6), late.Watermark);
        Assert.Equal(1, driver.Task.LateCount);
    }

    [Fact]
    public void HoppingWindows_CountAnEventInEachWindowThatContainsIt()
    {
        var (driver, outputs, _) = Revenue(HoppingWindows.Of(TimeSpan.FromMinutes(10), Five), suppress: true, outOfOrder: TimeSpan.Zero);

        Send(driver, At("a", 1, 7)); // in [0, 10) and [5, 15)
        Send(driver, At("a", 2, 12)); // in [5, 15) and [10, 20); closes [0, 10)
        Send(driver, At("a", 0, 40)); // closes everything before 40

        var byStart = outputs.ToDictionary(o => (o.Key.Window.Start - TestDriver.At(0)).TotalMinutes, o => o.Value);
        Assert.Equal(1m, byStart[0]);
        Assert.Equal(3m, byStart[5]);
        Assert.Equal(2m, byStart[10]);
        Assert.Equal(TimeSpan.FromMinutes(10), outputs[0].Key.Window.End - outputs[0].Key.Window.Start);
    }

    [Fact]
    public void SessionWindows_MergeSessionsThatAnOutOfOrderEventBridges()
    {
        var (driver, outputs, late) = Revenue(SessionWindows.WithGap(TimeSpan.FromMinutes(3)), suppress: true, outOfOrder: TimeSpan.FromMinutes(10));

        Send(driver, At("a", 1, 0));
        Send(driver, At("a", 2, 2)); // extends [0, 2]
        Send(driver, At("a", 4, 7)); // new session [7, 7] (gap 5 > 3)
        Send(driver, At("a", 8, 4.5)); // bridges both: [0, 7] = 15
        Send(driver, At("b", 1, 5));
        Assert.Empty(outputs);
        Send(driver, At("a", 16, 30)); // watermark 20 ≥ 7 + 3: closes [0, 7] and b's [5, 5]
        Assert.Empty(late);

        var a = Assert.Single(outputs, o => o.Key.Key == "a");
        Assert.Equal(new TimeWindow(TestDriver.At(0), TestDriver.At(7)), a.Key.Window);
        Assert.Equal(15m, a.Value);
        Assert.Equal(1m, Assert.Single(outputs, o => o.Key.Key == "b").Value);

        Send(driver, At("a", 1, 9)); // 9 + 0 grace < watermark 20: late
        Assert.Single(late);
    }

    [Fact]
    public void SuppressedSessions_AFunctionThrowingOnOneClosedSession_DoesNotStopTheOthersFromClosing()
    {
        // The Map after the session aggregate runs in the timer that closes sessions: its exception escaped the timer and
        // left the sessions after it (here b's) unclosed until the watermark moved again.
        var builder = new StreamBuilder();
        var outputs = new List<StreamOutput<Windowed<string>, long>>();
        builder.Stream<Click>().GroupByKey().WindowedBy(SessionWindows.WithGap(TimeSpan.FromMinutes(1))).SuppressUntilWindowCloses().Count("sessions").ToStream()
            .Map((w, n) => w.Key == "a" ? throw new InvalidOperationException("refused") : n)
            .To(Collect.Into(outputs));
        var driver = new TestDriver(builder.Build());

        driver.Send("a", new Click("a", "x"), 0).Send("b", new Click("b", "x"), 0.5).Send("c", new Click("c", "x"), 10);

        var b = Assert.Single(outputs);
        Assert.Equal(("b", 1L), (b.Key.Key, b.Value));
        Assert.Equal(2, driver.Task.Store("sessions").Entries.Count(e => ((SessionSlot<long>[])e.Value).All(s => s.Closed)));
    }

    [Fact]
    public void SessionWindows_WithoutSuppression_EmitTheGrowingSession()
    {
        var builder = new StreamBuilder();
        var outputs = new List<StreamOutput<Windowed<string>, long>>();
        builder.Stream<Click>().GroupByKey().WindowedBy(SessionWindows.WithGap(TimeSpan.FromMinutes(1))).Count("sessions").ToStream().To(Collect.Into(outputs));
        var driver = new TestDriver(builder.Build());

        driver.Send("u", new Click("u", "a"), 0).Send("u", new Click("u", "b"), 0.5).Send("u", new Click("u", "c"), 5);

        Assert.Equal([1L, 2L, 1L], outputs.Select(o => o.Value));
        Assert.Equal(TestDriver.At(0.5), outputs[1].Key.Window.End);
    }

    [Fact]
    public void ClosedWindows_AreRemovedFromStateAfterTheirRetention()
    {
        var builder = new StreamBuilder();
        builder.Stream<Click>().GroupByKey().WindowedBy(TumblingWindows.Of(Five)).RetainClosedWindowsFor(TimeSpan.FromMinutes(10)).Count("counts");
        var driver = new TestDriver(builder.Build());

        driver.Send("u", new Click("u", "a"), 1).Send("u", new Click("u", "a"), 6);
        Assert.Equal(2, driver.Task.Store("counts").Count); // [0, 5) closed but retained

        driver.Send("u", new Click("u", "a"), 16);
        Assert.Equal(2, driver.Task.Store("counts").Count); // [0, 5) gone at 15, [5, 10) retained, [15, 20) open
        Assert.DoesNotContain(driver.Task.Store("counts").Entries, e => e.Key.EndsWith("@" + TestDriver.At(0).UtcTicks, StringComparison.Ordinal));
    }

    [Fact]
    public void AWindowWhoseFirstRecordTheAggregatorRefused_IsRetainedWhenItCloses()
    {
        // The refused record had put the window on the close index without a slot; the next record put it there again,
        // so the window closed at the first entry and was deleted at the second, at once, instead of being retained.
        var builder = new StreamBuilder();
        builder.Stream<Click>().GroupByKey().WindowedBy(TumblingWindows.Of(Five)).RetainClosedWindowsFor(TimeSpan.FromMinutes(10))
            .Aggregate(() => 0, (_, c, n) => c.Page == "bad" ? throw new InvalidOperationException("refused") : n + 1, "counts");
        var driver = new TestDriver(builder.Build());

        Assert.Throws<InvalidOperationException>(() => driver.Send("u", new Click("u", "bad"), 1));
        driver.Send("u", new Click("u", "a"), 2).Send("u", new Click("u", "a"), 6);

        var closed = Assert.Single(driver.Task.Store("counts").Entries, e => e.Key.EndsWith("@" + TestDriver.At(0).UtcTicks, StringComparison.Ordinal));
        Assert.Equal(1, ((IWindowSlot)closed.Value).Value);
    }

    /// <summary>
    /// A window reaching past the range of DateTimeOffset (one of an event at DateTimeOffset.MaxValue, or a hopping or 7-minute
    /// window of an unset event time, 0001-01-01, that starts before it) is reported cut at MinValue / MaxValue. Regression:
    /// making its TimeWindow threw ArgumentOutOfRangeException, from the operator (the event was dead-lettered) or, for a
    /// suppressed window, from the timer closing it, which left the window unclosed and failed the event that moved the
    /// watermark instead (and, fed from a handler, every later one: the reload brought the window back).
    /// </summary>
    [Fact]
    public void WindowsReachingPastTheRangeOfDateTimeOffset_AreCutAtItsEnds()
    {
        var (atMax, updates, _) = Revenue(TumblingWindows.Of(TimeSpan.FromMinutes(7)), suppress: false, outOfOrder: TimeSpan.Zero);
        Send(atMax, new Order("o1", "a", 3, DateTimeOffset.MaxValue));
        var update = Assert.Single(updates);
        Assert.Equal(DateTimeOffset.MaxValue, update.Key.Window.End);
        Assert.Equal(3m, update.Value);

        var (atMin, closed, _) = Revenue(HoppingWindows.Of(TimeSpan.FromMinutes(10), TimeSpan.FromMinutes(5)), suppress: true, outOfOrder: TimeSpan.Zero);
        Send(atMin, new Order("o1", "a", 1, default));
        Send(atMin, At("a", 2, 0)); // closes both windows of the first: [0, 10 min) and [-5 min, 5 min)
        Assert.Equal([DateTimeOffset.MinValue, DateTimeOffset.MinValue], closed.Select(c => c.Key.Window.Start));
        Assert.Equal([1m, 1m], closed.Select(c => c.Value));
    }
}
