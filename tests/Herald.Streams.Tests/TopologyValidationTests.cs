namespace Herald.Streams.Tests;

public sealed class TopologyValidationTests
{
    [Fact]
    public void Build_WithACycleThroughNamedStreams_ThrowsNamingTheOperators()
    {
        var builder = new StreamBuilder();
        builder.Stream<Click>().To("loop");
        builder.Stream<string, Click>("loop").Filter(c => c.Page != "x").To("loop");

        var error = Assert.Throws<StreamTopologyException>(builder.Build);

        Assert.Contains("cycle", error.Message, StringComparison.Ordinal);
        Assert.Contains("filter-", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Build_WithAJoinWithoutAWindow_ThrowsNamingTheJoin()
    {
        var builder = new StreamBuilder();
        var orders = builder.Stream<Order>().SelectKey(o => o.OrderId);
        var payments = builder.Stream<Payment>().SelectKey(p => p.OrderId);
        orders.Join(payments, (o, p) => o.Amount - p.Amount, null!);

        var error = Assert.Throws<StreamTopologyException>(builder.Build);

        Assert.Contains("'inner-join-", error.Message, StringComparison.Ordinal);
        Assert.Contains("no join window", error.Message, StringComparison.Ordinal);
    }

    [Theory]
    [InlineData(0, 0, "window size is not positive")]
    [InlineData(-5, 0, "window size is not positive")]
    [InlineData(5, -1, "grace period is negative")]
    public void Build_WithABadTumblingWindow_ThrowsWithTheReason(int sizeMinutes, int graceMinutes, string reason)
    {
        var builder = new StreamBuilder();
        builder.Stream<Click>().GroupByKey().WindowedBy(TumblingWindows.Of(TimeSpan.FromMinutes(sizeMinutes)).WithGrace(TimeSpan.FromMinutes(graceMinutes))).Count("c");

        var error = Assert.Throws<StreamTopologyException>(builder.Build);

        Assert.Contains("'window-aggregate-", error.Message, StringComparison.Ordinal);
        Assert.Contains(reason, error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Build_WithBadHoppingSessionAndJoinWindows_ReportsEachProblem()
    {
        var builder = new StreamBuilder();
        var clicks = builder.Stream<Click>();
        clicks.GroupByKey().WindowedBy(HoppingWindows.Of(TimeSpan.FromMinutes(1), TimeSpan.FromMinutes(2))).Count("a");
        clicks.GroupByKey().WindowedBy(SessionWindows.WithGap(TimeSpan.Zero)).Count("b");
        clicks.Join(clicks, (a, b) => a, JoinWindows.Of(TimeSpan.FromSeconds(-1)));

        var error = Assert.Throws<StreamTopologyException>(builder.Build);

        Assert.Equal(3, error.Problems.Count);
        Assert.Contains(error.Problems, p => p.Contains("larger than its size", StringComparison.Ordinal));
        Assert.Contains(error.Problems, p => p.Contains("session gap is not positive", StringComparison.Ordinal));
        Assert.Contains(error.Problems, p => p.Contains("join window is not positive", StringComparison.Ordinal));
    }

    [Fact]
    public void Build_WithDuplicateStoreNamesOrAWindowedTableJoin_Throws()
    {
        var builder = new StreamBuilder();
        var clicks = builder.Stream<Click>();
        clicks.GroupByKey().Count("same");
        var windowed = clicks.Map(c => c.Page).GroupByKey().WindowedBy(TumblingWindows.Of(TimeSpan.FromMinutes(1))).Count("same");
        _ = windowed;

        var error = Assert.Throws<StreamTopologyException>(builder.Build);

        Assert.Contains("'same' is used by", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Build_WithoutASource_Throws()
    {
        var error = Assert.Throws<StreamTopologyException>(new StreamBuilder().Build);

        Assert.Contains("no source", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Builder_AfterBuild_RefusesMoreOperators()
    {
        var builder = new StreamBuilder();
        var clicks = builder.Stream<Click>();
        clicks.GroupByKey().Count("c");
        var topology = builder.Build();

        Assert.Throws<InvalidOperationException>(() => clicks.Filter(_ => true));
        Assert.Same(topology, builder.Build());
        Assert.Equal(["c"], topology.StoreNames);
    }
}
