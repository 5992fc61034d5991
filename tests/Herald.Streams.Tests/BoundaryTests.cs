namespace Herald.Streams.Tests;

/// <summary>
/// The edges Kafka Streams users trip over, pinned: a window is [start, end), closes when the watermark reaches end +
/// grace, a session takes an event exactly one gap away, and a join takes partners exactly <c>within</c> apart, either way.
/// </summary>
public sealed class BoundaryTests
{
    private static readonly TimeSpan Five = TimeSpan.FromMinutes(5);

    private static Order At(string product, decimal amount, double minutes) => new(Guid.NewGuid().ToString(), product, amount, TestDriver.At(minutes));

    [Fact]
    public void AnEventAtAWindowsEnd_FallsInTheNextWindow_AndTheWindowClosesWhenTheWatermarkReachesEndPlusGrace()
    {
        var builder = new StreamBuilder();
        var outputs = new List<StreamOutput<Windowed<string>, long>>();
        var late = new List<StreamOutput<string, Order>>();
        builder.Stream<Order>(o => o.PlacedAt).GroupBy(o => o.ProductId)
            .WindowedBy(TumblingWindows.Of(Five).WithGrace(TimeSpan.FromMinutes(1)))
            .WithLateOutput(s => s.To(Collect.Into(late)))
            .Count("counts").ToStream().To(Collect.Into(outputs));
        var driver = new TestDriver(builder.Build());

        foreach (var order in new[] { At("a", 1, 0), At("a", 1, 5), At("a", 1, 5.99), At("a", 1, 4.99), At("a", 1, 6), At("a", 1, 4.99) })
        {
            driver.Send(order.OrderId, order, DateTimeOffset.MinValue);
        }

        // 5 opens [5, 10); 4.99 at watermark 5.99 < 5 + 1 is on time; at watermark 6 = 5 + 1, [0, 5) has closed.
        Assert.Equal(
            [(0.0, 1L), (5.0, 1L), (5.0, 2L), (0.0, 2L), (5.0, 3L)],
            outputs.Select(o => ((o.Key.Window.Start - TestDriver.At(0)).TotalMinutes, o.Value)));
        Assert.Equal(TestDriver.At(4.99), Assert.Single(late).Value.PlacedAt);
    }

    [Fact]
    public void AnEventExactlyOneGapAfterASession_ExtendsIt_AndOneTickMoreStartsANewOne()
    {
        var builder = new StreamBuilder();
        var outputs = new List<StreamOutput<Windowed<string>, long>>();
        builder.Stream<Order>(o => o.PlacedAt).GroupBy(o => o.ProductId)
            .WindowedBy(SessionWindows.WithGap(TimeSpan.FromMinutes(3)))
            .Count("sessions").ToStream().To(Collect.Into(outputs));
        var driver = new TestDriver(builder.Build(), TimeSpan.FromHours(1));

        var first = At("a", 1, 0);
        var atGap = At("a", 1, 3);
        var past = new Order("p", "a", 1, TestDriver.At(6).AddTicks(1));
        driver.Send(first.OrderId, first, DateTimeOffset.MinValue).Send(atGap.OrderId, atGap, DateTimeOffset.MinValue).Send(past.OrderId, past, DateTimeOffset.MinValue);

        Assert.Equal(new TimeWindow(TestDriver.At(0), TestDriver.At(3)), outputs[1].Key.Window);
        Assert.Equal(2L, outputs[1].Value);
        Assert.Equal(new TimeWindow(past.PlacedAt, past.PlacedAt), outputs[2].Key.Window);
        Assert.Equal(1L, outputs[2].Value);
    }

    [Fact]
    public void AJoin_TakesPartnersExactlyWithinApartOnEitherSide_AndNoFurther()
    {
        var builder = new StreamBuilder();
        var joined = new List<StreamOutput<string, string>>();
        var orders = builder.Stream<Order>(o => o.PlacedAt).SelectKey(o => o.OrderId);
        var payments = builder.Stream<Payment>(p => p.PaidAt).SelectKey(p => p.OrderId);
        orders.Join(payments, (o, p) => $"{o.ProductId}+{p.Amount}", JoinWindows.Of(TimeSpan.FromMinutes(10))).To(Collect.Into(joined));
        var driver = new TestDriver(builder.Build(), TimeSpan.FromHours(1));

        driver.Send("o", new Order("o", "mid", 1, TestDriver.At(10)), TestDriver.At(10));
        driver.Send("p", new Payment("o", 1, TestDriver.At(0)), TestDriver.At(0)); // 10 before: joins
        driver.Send("p", new Payment("o", 2, TestDriver.At(20)), TestDriver.At(20)); // 10 after: joins
        driver.Send("p", new Payment("o", 3, TestDriver.At(20).AddTicks(1)), TestDriver.At(20)); // one tick further: does not
        driver.Send("p", new Payment("o", 4, TestDriver.At(0).AddTicks(-1)), TestDriver.At(0)); // nor before

        Assert.Equal(["mid+1", "mid+2"], joined.Select(j => j.Value));
    }
}
