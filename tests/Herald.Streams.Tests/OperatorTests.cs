namespace Herald.Streams.Tests;

public sealed class OperatorTests
{
    [Fact]
    public void MapFilterFlatMapAndPeek_TransformEachRecordInOrder()
    {
        var builder = new StreamBuilder();
        var peeked = new List<string>();
        var outputs = new List<StreamOutput<string, string>>();
        builder.Stream<Click>()
            .Filter(c => c.Page != "ignored")
            .FlatMap(c => new[] { c.Page, c.Page + "!" })
            .Map(p => p.ToUpperInvariant())
            .Peek((k, v) => peeked.Add(k + ":" + v))
            .To(Collect.Into(outputs));
        var driver = new TestDriver(builder.Build());

        driver.Send("u1", new Click("u1", "home"), 0).Send("u2", new Click("u2", "ignored"), 1).Send("u1", new Click("u1", "cart"), 2);

        Assert.Equal(["HOME", "HOME!", "CART", "CART!"], outputs.Select(o => o.Value));
        Assert.Equal(["u1:HOME", "u1:HOME!", "u1:CART", "u1:CART!"], peeked);
        Assert.Equal(TestDriver.At(2), outputs[^1].EventTime);
    }

    [Fact]
    public void SelectKeyAndGroupBy_ReKeyAndCountPerNewKey()
    {
        var builder = new StreamBuilder();
        var counts = new List<StreamOutput<string, long>>();
        builder.Stream<Click>().GroupBy(c => c.Page).Count("per-page").ToStream().To(Collect.Into(counts));
        var driver = new TestDriver(builder.Build());

        driver.Send("u1", new Click("u1", "home"), 0).Send("u2", new Click("u2", "home"), 1).Send("u3", new Click("u3", "cart"), 2);

        Assert.Equal([("home", 1L), ("home", 2L), ("cart", 1L)], counts.Select(c => (c.Key, c.Value)));
    }

    [Fact]
    public void ReduceAndAggregate_FoldValuesPerKey()
    {
        var builder = new StreamBuilder();
        var orders = builder.Stream<Order>().SelectKey(o => o.ProductId);
        var max = new List<StreamOutput<string, Order>>();
        var sums = new List<StreamOutput<string, decimal>>();
        orders.GroupByKey().Reduce((a, b) => a.Amount >= b.Amount ? a : b, "max").ToStream().To(Collect.Into(max));
        orders.GroupByKey().Aggregate(() => 0m, (_, o, sum) => sum + o.Amount, "sum").ToStream().To(Collect.Into(sums));
        var driver = new TestDriver(builder.Build());

        driver.Send("o1", new Order("o1", "p", 5, default), 0).Send("o2", new Order("o2", "p", 9, default), 1).Send("o3", new Order("o3", "p", 2, default), 2);

        Assert.Equal(["o1", "o2", "o2"], max.Select(m => m.Value.OrderId));
        Assert.Equal([5m, 14m, 16m], sums.Select(s => s.Value));
    }

    [Fact]
    public void MergeAndBranch_CombineAndSplitStreams()
    {
        var builder = new StreamBuilder();
        var a = builder.Stream<Click>().Filter(c => c.User == "a");
        var b = builder.Stream<Click>().Filter(c => c.User == "b");
        var branches = a.Merge(b).Branch(c => c.Page == "home", c => c.Page.StartsWith('c'));
        var home = new List<StreamOutput<string, Click>>();
        var cs = new List<StreamOutput<string, Click>>();
        branches[0].To(Collect.Into(home));
        branches[1].To(Collect.Into(cs));
        var driver = new TestDriver(builder.Build());

        driver.Send("a", new Click("a", "home"), 0).Send("b", new Click("b", "cart"), 1).Send("b", new Click("b", "home"), 2)
            .Send("c", new Click("c", "home"), 3).Send("a", new Click("a", "other"), 4);

        Assert.Equal(["a", "b"], home.Select(h => h.Value.User));
        Assert.Equal(["cart"], cs.Select(c => c.Value.Page));
    }

    [Fact]
    public void NamedStreams_CarryRecordsFromToIntoStream()
    {
        var builder = new StreamBuilder();
        builder.Stream<Click>().Map(c => c.Page).To("pages");
        var outputs = new List<StreamOutput<string, int>>();
        builder.Stream<string, string>("pages").Map(p => p.Length).To(Collect.Into(outputs));
        var driver = new TestDriver(builder.Build());

        driver.Send("u", new Click("u", "home"), 0);

        Assert.Equal([4], outputs.Select(o => o.Value));
    }

    [Fact]
    public void ToTableAndTableJoin_EnrichRecordsWithTheLatestValue()
    {
        var builder = new StreamBuilder();
        var prices = builder.Stream<Price>().SelectKey(p => p.ProductId).ToTable("prices");
        var inner = new List<StreamOutput<string, decimal>>();
        var left = new List<StreamOutput<string, decimal?>>();
        var orders = builder.Stream<Order>().SelectKey(o => o.ProductId);
        orders.Join(prices, (o, p) => o.Amount * p.Unit).To(Collect.Into(inner));
        orders.LeftJoin(prices, (o, p) => p is null ? (decimal?)null : o.Amount * p.Unit).To(Collect.Into(left));
        var driver = new TestDriver(builder.Build());

        driver.Send("x", new Order("o1", "p", 2, default), 0)
            .Send("p", new Price("p", 10), 1)
            .Send("x", new Order("o2", "p", 3, default), 2)
            .Send("p", new Price("p", 20), 3)
            .Send("x", new Order("o3", "p", 1, default), 4);

        Assert.Equal([30m, 20m], inner.Select(i => i.Value));
        Assert.Equal([null, 30m, 20m], left.Select(l => l.Value));
    }

    [Fact]
    public void ReducedTable_IsJoinableByItsValue()
    {
        var builder = new StreamBuilder();
        var latest = builder.Stream<Price>().GroupBy(p => p.ProductId).Reduce((_, b) => b, "latest-price");
        var outputs = new List<StreamOutput<string, decimal>>();
        builder.Stream<Order>().SelectKey(o => o.ProductId).Join(latest, (o, p) => o.Amount * p.Unit).To(Collect.Into(outputs));
        var driver = new TestDriver(builder.Build());

        driver.Send("p", new Price("p", 3), 0).Send("x", new Order("o", "p", 2, default), 1);

        Assert.Equal([6m], outputs.Select(o => o.Value));
    }

    [Fact]
    public void SelectKeyReturningNull_ThrowsAStreamKeyExceptionNamingTheOperator()
    {
        var builder = new StreamBuilder();
        builder.Stream<Click>().SelectKey(c => (string)null!).GroupByKey().Count("c");
        var driver = new TestDriver(builder.Build());

        var error = Assert.Throws<StreamKeyException>(() => driver.Send("u", new Click("u", "x"), 0));
        Assert.Contains("selectkey-2", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void KeysHoldingHalfASurrogatePair_AreRefusedInsteadOfSharingOneStateEntry()
    {
        // JSON writes any lone surrogate as U+FFFD: these three keys would all be kept (and counted) as "a\uFFFD".
        var builder = new StreamBuilder();
        var counts = new List<StreamOutput<string, long>>();
        builder.Stream<Click>().GroupBy(c => c.Page).Count("per-page").ToStream().To(Collect.Into(counts));
        var driver = new TestDriver(builder.Build());

        driver.Send("u1", new Click("u1", "a\uFFFD"), 0);
        var high = Assert.Throws<StreamKeyException>(() => driver.Send("u2", new Click("u2", "a\uD83D"), 1));
        var low = Assert.Throws<StreamKeyException>(() => driver.Send("u3", new Click("u3", "a\uDE00"), 2));
        driver.Send("u4", new Click("u4", "x\uD83D\uDE00"), 3); // a whole pair is a key like any other

        Assert.Equal([("a\uFFFD", 1L), ("x\uD83D\uDE00", 1L)], counts.Select(c => (c.Key, c.Value)));
        Assert.Contains("aggregate-", high.Message, StringComparison.Ordinal);
        Assert.Contains("surrogate", low.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void KeysOfAnyTypeHoldingHalfASurrogatePair_AreRefused_AndAGivenReplacementCharacterIsNot()
    {
        var builder = new StreamBuilder();
        var counts = new List<StreamOutput<PageKey, long>>();
        builder.Stream<Click>().GroupBy(c => new PageKey(c.Page)).Count("per-page").ToStream().To(Collect.Into(counts));
        var driver = new TestDriver(builder.Build());

        driver.Send("u1", new Click("u1", "a\uFFFD"), 0);
        Assert.Throws<StreamKeyException>(() => driver.Send("u2", new Click("u2", "a\uDE00"), 1));
        driver.Send("u3", new Click("u3", "a\uFFFD"), 2);

        Assert.Equal([(new PageKey("a\uFFFD"), 1L), (new PageKey("a\uFFFD"), 2L)], counts.Select(c => (c.Key, c.Value)));
    }
}

public sealed record Price(string ProductId, decimal Unit);

public sealed record PageKey(string Page);
