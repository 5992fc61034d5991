namespace Herald.Streams.Tests;

public sealed class JoinTests
{
    private static readonly JoinWindows TenMinutes = JoinWindows.Of(TimeSpan.FromMinutes(10));

    private static (TestDriver Driver, List<StreamOutput<string, string>> Out) Build(
        Func<IStream<string, Order>, IStream<string, Payment>, IStream<string, string>> join, TimeSpan? outOfOrder = null)
    {
        var builder = new StreamBuilder();
        var orders = builder.Stream<Order>(o => o.PlacedAt).SelectKey(o => o.OrderId);
        var payments = builder.Stream<Payment>(p => p.PaidAt).SelectKey(p => p.OrderId);
        var outputs = new List<StreamOutput<string, string>>();
        join(orders, payments).To(Collect.Into(outputs));
        return (new TestDriver(builder.Build(), outOfOrder), outputs);
    }

    private static void Order(TestDriver d, string id, double minutes) => d.Send(id, new Order(id, "p", 10, TestDriver.At(minutes)), default(DateTimeOffset));

    private static void Pay(TestDriver d, string id, double minutes) => d.Send(id, new Payment(id, 10, TestDriver.At(minutes)), default(DateTimeOffset));

    [Fact]
    public void OrdersJoinedWithPaymentsWithin10Minutes_SeedExample_InnerJoinMatchesOnlyWithinTheWindow()
    {
        var (driver, outputs) = Build((o, p) => o.Join(p, (order, payment) => $"{order.OrderId} paid {payment.Amount}", TenMinutes), TimeSpan.FromMinutes(5));

        Order(driver, "o1", 0);
        Order(driver, "o2", 1);
        Pay(driver, "o1", 8); // within 10 minutes
        Pay(driver, "o2", 12); // 11 minutes after: no match
        Pay(driver, "o3", 13); // no order
        Order(driver, "o4", 20);
        Pay(driver, "o4", 17); // payment recorded before the order, 3 minutes apart, out of order: matches

        Assert.Equal(["o1 paid 10", "o4 paid 10"], outputs.Select(o => o.Value));
        Assert.Equal(TestDriver.At(20), outputs[1].EventTime);
    }

    /// <summary>
    /// A join grace of TimeSpan.MaxValue overflowed (time + grace) to a negative tick count: every record of both sides was
    /// reported late and nothing joined.
    /// </summary>
    [Fact]
    public void Join_WithAGraceOfTimeSpanMaxValue_JoinsInsteadOfOverflowing()
    {
        var (driver, outputs) = Build((o, p) => o.Join(p, (order, payment) => $"{order.OrderId} paid", TenMinutes.WithGrace(TimeSpan.MaxValue)));

        Order(driver, "o1", 0);
        Pay(driver, "o1", 5);

        Assert.Equal(["o1 paid"], outputs.Select(o => o.Value));
        Assert.Empty(driver.Late);
    }

    [Fact]
    public void LeftJoin_EmitsAnUnmatchedOrderWhenItsWindowCloses()
    {
        var (driver, outputs) = Build((o, p) => o.LeftJoin(p, (order, payment) => $"{order.OrderId}:{payment?.Amount.ToString() ?? "unpaid"}", TenMinutes));

        Order(driver, "o1", 0);
        Order(driver, "o2", 1);
        Pay(driver, "o1", 5);
        Assert.Equal(["o1:10"], outputs.Select(o => o.Value));
        Pay(driver, "zz", 11.5); // watermark 11.5 > 1 + 10: o2's window closed without a payment

        Assert.Equal(["o1:10", "o2:unpaid"], outputs.Select(o => o.Value));
        Assert.Equal(TestDriver.At(11), outputs[1].EventTime); // the end of o2's window
    }

    [Fact]
    public void LeftJoin_AJoinerThrowingForAnUnmatchedRecord_DoesNotStopTheOtherWindowsFromClosing()
    {
        // The joiner runs for an unmatched order when its window closes, in the timer: its exception escaped the timer,
        // which had taken o2 off its index without dropping it, and skipped o3 (and every other timed operator) until the
        // watermark moved again.
        var (driver, outputs) = Build((o, p) => o.LeftJoin(p, (order, payment) => order.OrderId == "o2" && payment is null
            ? throw new InvalidOperationException("no payment")
            : $"{order.OrderId}:{payment?.Amount.ToString() ?? "unpaid"}", TenMinutes));

        Order(driver, "o1", 0);
        Order(driver, "o2", 1);
        Order(driver, "o3", 2);
        Pay(driver, "zz", 30); // closes the windows of o1, o2 and o3

        Assert.Equal(["o1:unpaid", "o3:unpaid"], outputs.Select(o => o.Value));
        Assert.Equal(0, driver.Task.Stores.Values.Where(s => s.Spec.Name.EndsWith("-left", StringComparison.Ordinal)).Sum(s => s.Count));
    }

    [Fact]
    public void OuterJoin_EmitsUnmatchedRecordsOfBothSides()
    {
        var (driver, outputs) = Build((o, p) => o.OuterJoin(p, (order, payment) => $"{order?.OrderId ?? "-"}|{payment?.OrderId ?? "-"}", TenMinutes));

        Order(driver, "o1", 0);
        Pay(driver, "p9", 2);
        Order(driver, "o2", 3);
        Pay(driver, "o2", 4);
        Pay(driver, "x", 30); // closes everything before 20; x itself stays open

        Assert.Equal(["o2|o2", "o1|-", "-|p9"], outputs.Select(o => o.Value));
    }

    [Fact]
    public void Join_ARecordOlderThanWatermarkMinusGrace_IsLate()
    {
        var (driver, outputs) = Build((o, p) => o.Join(p, (order, _) => order.OrderId, JoinWindows.Of(TimeSpan.FromMinutes(10)).WithGrace(TimeSpan.FromMinutes(1))));

        Order(driver, "o1", 20);
        Pay(driver, "o0", 18.5); // 18.5 + 1 < 20: late
        Pay(driver, "o1", 19.5); // on time
        Assert.Equal(["o1"], outputs.Select(o => o.Value));
        var late = Assert.Single(driver.Late);
        Assert.StartsWith("inner-join-", late.Operator, StringComparison.Ordinal);
    }

    [Fact]
    public void JoinBuffers_AreEmptiedOnceTheWatermarkPassesTheWindow()
    {
        var (driver, _) = Build((o, p) => o.Join(p, (order, _) => order.OrderId, TenMinutes));

        Order(driver, "o1", 0);
        Pay(driver, "o1", 1);
        Assert.Equal(2, driver.Task.Stores.Values.Where(s => s.Spec.Name.Contains("join", StringComparison.Ordinal)).Sum(s => s.Count));
        Order(driver, "o9", 12);

        Assert.Equal(1, driver.Task.Stores.Values.Where(s => s.Spec.Name.Contains("join", StringComparison.Ordinal)).Sum(s => s.Count));
    }
}
