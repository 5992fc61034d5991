using System.Text;
using Herald.Conformance;
using Herald.EventSourcing;
using Herald.Messages;
using Herald.Reliability.DeadLetters;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;

namespace Herald.Streams.Tests;

public sealed class ProcessorTests
{
    [Fact]
    public async Task InMemory_AFailedCommitMidStream_ResumesWithoutLossOrDoubleCount() =>
        await ProcessorScenario.RunAsync(_ => { }, sharedHost: true);

    /// <summary>
    /// The commit under way when StopAsync is called fails: Completion must fault with that failure. Regression: StopAsync
    /// let the run end and then completed Completion successfully, so a last commit that failed went unreported.
    /// </summary>
    [Fact]
    public async Task StopAsync_WhileACommitThatFailsIsUnderWay_FaultsCompletion()
    {
        using var host = await ProcessorScenario.StartHostAsync(_ => { });
        var events = host.Services.GetRequiredService<IEventStore>();
        var envelopes = host.Services.GetRequiredService<EnvelopeFactory>();
        var sink = new RefusingSink();
        var builder = new StreamBuilder();
        builder.Stream<Order>().To(sink);
        await using var processor = new StreamProcessor("last-commit", builder.Build(), host.Services);
        await processor.StartAsync();
        await events.AppendAsync("order-0", ExpectedVersion.NoStream, [envelopes.Create(ProcessorScenario.OrderAt(0))]);
        await processor.WaitForPositionAsync(await events.GetLastPositionAsync()).WaitAsync(TimeSpan.FromSeconds(30));

        sink.Armed = true;
        await events.AppendAsync("order-1", ExpectedVersion.NoStream, [envelopes.Create(ProcessorScenario.OrderAt(1))]);
        await sink.Entered.Task.WaitAsync(TimeSpan.FromSeconds(30));
        var stopping = processor.StopAsync();

        // StopAsync has marked the run stopped and waits for the commit; then the commit fails.
        await Eventually.UntilAsync(() => processor.OwnedPartitions.Count == 0, "StopAsync stopped the run");
        sink.Answer.SetResult();
        await stopping.WaitAsync(TimeSpan.FromSeconds(30));

        var failure = await Assert.ThrowsAsync<InvalidOperationException>(() => processor.Completion);
        Assert.Contains("refused", failure.Message, StringComparison.Ordinal);
        await host.StopAsync();
    }

    [Fact]
    public async Task UndecodableAndUnkeyableEvents_GoToTheDeadLettersWithTheReason_AndTheProcessorGoesOn()
    {
        using var host = await ProcessorScenario.StartHostAsync(_ => { });
        var events = host.Services.GetRequiredService<IEventStore>();
        var envelopes = host.Services.GetRequiredService<EnvelopeFactory>();
        await events.AppendAsync("order-1", ExpectedVersion.Any, [envelopes.Create(ProcessorScenario.OrderAt(1))]);
        var broken = envelopes.Create(ProcessorScenario.OrderAt(2)) with { Body = Encoding.UTF8.GetBytes("{not json") };
        await events.AppendAsync("order-2", ExpectedVersion.Any, [broken]);
        await events.AppendAsync("order-3", ExpectedVersion.Any, [envelopes.Create(ProcessorScenario.OrderAt(3) with { ProductId = null! })]);
        await events.AppendAsync("order-4", ExpectedVersion.Any, [envelopes.Create(ProcessorScenario.OrderAt(5))]);
        var head = await events.GetLastPositionAsync();

        var builder = new StreamBuilder();
        builder.Stream<Order>().GroupBy(o => o.ProductId).Count("orders");
        await using var processor = new StreamProcessor("bad-input", builder.Build(), host.Services);
        await processor.StartAsync();
        await processor.WaitForPositionAsync(head).WaitAsync(TimeSpan.FromSeconds(30));

        Assert.Equal(2L, await processor.QueryAsync<string, long>("orders", "p1")); // orders 1 and 5; 2 and 3 were refused
        var deadLetters = await host.Services.GetRequiredService<IDeadLetterStore>().ListAsync(new DeadLetterQuery { Endpoint = "stream:bad-input" });
        // Listed by dead-letter id (a UUID v7 of when each was written): two written in the same millisecond may list either
        // way round, so each is found by its cause.
        Assert.Equal(2, deadLetters.Count);
        Assert.All(deadLetters, d => Assert.Equal(DeadLetterOrigin.StreamProcessor, d.Origin));
        var undecodable = Assert.Single(deadLetters, d => d.Cause == DeadLetterCause.Undecodable);
        Assert.Equal(broken.MessageId, undecodable.Envelope.MessageId);
        Assert.Contains("could not be decoded", undecodable.ErrorMessage, StringComparison.Ordinal);
        var unkeyable = Assert.Single(deadLetters, d => d.Cause == DeadLetterCause.NotRetryable);
        Assert.Contains("cannot be keyed", unkeyable.ErrorMessage, StringComparison.Ordinal);
        Assert.Contains("selectkey-", unkeyable.ErrorMessage, StringComparison.Ordinal);
        await host.StopAsync();
    }

    /// <summary>
    /// herald.stream.dead_lettered counts a dead letter once it is stored: the commit holding it fails, the restarted
    /// processor dead-letters the replayed event again and commits, and one dead letter is counted, as one is stored.
    /// Regression: it was counted when the record was made, before the commit, so the failed commit counted it too.
    /// </summary>
    [Fact]
    public async Task DeadLetteredMetric_ACommitThatFailsOnce_CountsTheDeadLetterOnce()
    {
        const string name = "dead-lettered-once";
        var counted = 0L;
        using var listener = new System.Diagnostics.Metrics.MeterListener
        {
            InstrumentPublished = (instrument, l) =>
            {
                if (instrument.Meter.Name == Herald.Diagnostics.HeraldDiagnostics.Name && instrument.Name == "herald.stream.dead_lettered")
                {
                    l.EnableMeasurementEvents(instrument);
                }
            },
        };
        listener.SetMeasurementEventCallback<long>((_, value, tags, _) =>
        {
            foreach (var tag in tags)
            {
                if (tag is { Key: "herald.stream", Value: name })
                {
                    Interlocked.Add(ref counted, value);
                }
            }
        });
        listener.Start();

        using var host = await ProcessorScenario.StartHostAsync(_ => { });
        var events = host.Services.GetRequiredService<IEventStore>();
        var envelopes = host.Services.GetRequiredService<EnvelopeFactory>();
        // Both in the first commit (CommitEvery 100): the undecodable event's dead letter and the order's output, which fails it.
        await events.AppendAsync("order-1", ExpectedVersion.Any, [envelopes.Create(ProcessorScenario.OrderAt(1)) with { Body = Encoding.UTF8.GetBytes("{not json") }]);
        await events.AppendAsync("order-2", ExpectedVersion.Any, [envelopes.Create(ProcessorScenario.OrderAt(2))]);
        var head = await events.GetLastPositionAsync();
        var refusals = 1;
        StreamTopology Topology()
        {
            var builder = new StreamBuilder();
            builder.Stream<Order>().To(StreamSinks.Callback<string, Order>(_ =>
            {
                if (Interlocked.Decrement(ref refusals) >= 0)
                {
                    throw new InvalidOperationException("Simulated failure: this commit is refused.");
                }
            }));
            return builder.Build();
        }

        await using (var failing = new StreamProcessor(name, Topology(), host.Services))
        {
            await failing.StartAsync();
            await Assert.ThrowsAsync<InvalidOperationException>(() => failing.Completion.WaitAsync(TimeSpan.FromSeconds(30)));
        }

        await using var resumed = new StreamProcessor(name, Topology(), host.Services);
        await resumed.StartAsync();
        await resumed.WaitForPositionAsync(head).WaitAsync(TimeSpan.FromSeconds(30));

        Assert.Single(await host.Services.GetRequiredService<IDeadLetterStore>().ListAsync(new DeadLetterQuery { Endpoint = "stream:" + name }));
        Assert.Equal(1L, Interlocked.Read(ref counted));
        await host.StopAsync();
    }

    [Fact]
    public async Task QueryAsync_ReadsTablesAndRefusesUnknownStores()
    {
        using var host = await ProcessorScenario.StartHostAsync(_ => { });
        var events = host.Services.GetRequiredService<IEventStore>();
        var envelopes = host.Services.GetRequiredService<EnvelopeFactory>();
        for (var i = 0; i < 8; i++)
        {
            await events.AppendAsync("order-" + i, ExpectedVersion.Any, [envelopes.Create(ProcessorScenario.OrderAt(i))]);
        }

        var builder = new StreamBuilder();
        builder.Stream<Order>().GroupBy(o => o.ProductId).Reduce((a, b) => a.Amount >= b.Amount ? a : b, "largest");
        await using var processor = new StreamProcessor("queries", builder.Build(), host.Services, new StreamProcessorOptions { Source = StreamSource.Category("order") });
        await processor.StartAsync();
        await processor.WaitForPositionAsync(await events.GetLastPositionAsync()).WaitAsync(TimeSpan.FromSeconds(30));

        var all = await processor.QueryAllAsync<string, Order>("largest");
        Assert.Equal(["p0", "p1", "p2", "p3"], all.Select(a => a.Key));
        Assert.Equal("o5", all[1].Value.OrderId); // p1: o1 (2), o5 (6)
        Assert.Equal("o5", (await processor.QueryAsync<string, Order>("largest", "p1"))!.OrderId);
        Assert.Null(await processor.QueryAsync<string, Order>("largest", "nope"));
        await Assert.ThrowsAsync<KeyNotFoundException>(async () => await processor.QueryAsync<string, long>("missing", "p1"));
        await host.StopAsync();
    }

    [Fact]
    public async Task ExternalSource_ProcessAsyncCommitsStateInTheCallersUnitOfWork()
    {
        using var host = await ProcessorScenario.StartHostAsync(_ => { });
        var builder = new StreamBuilder();
        builder.Stream<Order>().GroupBy(o => o.ProductId).Count("counts");
        var topology = builder.Build();
        await using (var processor = new StreamProcessor("external", topology, host.Services, new StreamProcessorOptions { Source = StreamSource.External }))
        {
            await processor.StartAsync();
            await processor.ProcessAsync(ProcessorScenario.OrderAt(0), "k", DateTimeOffset.UnixEpoch);
            await processor.ProcessAsync(ProcessorScenario.OrderAt(4), "k", DateTimeOffset.UnixEpoch);
        }

        // A new processor of the same name loads the committed state.
        await using var again = new StreamProcessor("external", topology, host.Services, new StreamProcessorOptions { Source = StreamSource.External });
        await again.StartAsync();
        Assert.Equal(2L, await again.QueryAsync<string, long>("counts", "p0"));
        await host.StopAsync();
    }

    /// <summary>
    /// An event fed from outside that reached no partition (filtered out) moved the watermark in memory only: the handler's
    /// unit of work committed nothing of it, so a restart (or the reload after any rolled-back unit of work) went back to the
    /// partition's older stream time, and a record that was late before was then counted into its closed window.
    /// </summary>
    [Fact]
    public async Task ExternalSource_AnEventFilteredOut_StillMovesTheCommittedWatermark()
    {
        using var host = await ProcessorScenario.StartHostAsync(_ => { });
        var t0 = DateTimeOffset.UnixEpoch;
        var late = new List<LateRecord>();
        var builder = new StreamBuilder();
        builder.Stream<Order>(o => o.PlacedAt).Filter(o => o.Amount > 0).GroupBy(o => o.ProductId)
            .WindowedBy(TumblingWindows.Of(TimeSpan.FromMinutes(5))).Count("per-5-minutes");
        var topology = builder.Build();
        var options = new StreamProcessorOptions { Source = StreamSource.External, OnLate = late.Add };
        await using (var processor = new StreamProcessor("external-watermark", topology, host.Services, options))
        {
            await processor.StartAsync();
            await processor.ProcessAsync(new Order("o1", "p", 1m, t0.AddMinutes(1)), "o1", t0);
            await processor.ProcessAsync(new Order("o2", "p", 0m, t0.AddMinutes(20)), "o2", t0); // filtered out
            Assert.Equal(t0.AddMinutes(20), processor.Watermark);
        }

        await using var again = new StreamProcessor("external-watermark", topology, host.Services, options);
        await again.StartAsync();
        Assert.Equal(t0.AddMinutes(20), again.Watermark);
        await again.ProcessAsync(new Order("o3", "p", 1m, t0.AddMinutes(2)), "o3", t0); // [0, 5) closed at 5 ≤ 20: late

        Assert.Equal("o3", ((Order)Assert.Single(late).Value!).OrderId);
        var window = Assert.Single(await again.QueryWindowsAsync<string, long>("per-5-minutes", "p", t0, t0.AddMinutes(30)));
        Assert.Equal(1L, window.Value);
        await host.StopAsync();
    }

    /// <summary>
    /// An unset event time (0001-01-01) falls in windows that begin before it: the timer closing them threw making their
    /// TimeWindow, so the event that moved the watermark failed, and, since the reload after its rollback brought the
    /// unclosed window back, so did every event after it. The watermark before 0001-01-01 + out-of-orderness threw too.
    /// </summary>
    [Fact]
    public async Task ExternalSource_AWindowBeginningBeforeYearOne_ClosesInsteadOfFailingEveryLaterEvent()
    {
        using var host = await ProcessorScenario.StartHostAsync(_ => { });
        var t0 = new DateTimeOffset(2026, 1, 1, 0, 0, 0, TimeSpan.Zero);
        var closed = new List<StreamOutput<Windowed<string>, long>>();
        var builder = new StreamBuilder();
        builder.Stream<Order>(o => o.PlacedAt).GroupBy(o => o.ProductId)
            .WindowedBy(HoppingWindows.Of(TimeSpan.FromMinutes(10), TimeSpan.FromMinutes(5))).SuppressUntilWindowCloses().Count("counts")
            .ToStream().To(Collect.Into(closed));
        var options = new StreamProcessorOptions { Source = StreamSource.External, AllowedOutOfOrderness = TimeSpan.FromMinutes(2) };
        await using var processor = new StreamProcessor("year-one", builder.Build(), host.Services, options);
        await processor.StartAsync();

        await processor.ProcessAsync(new Order("o1", "p", 1m, default), "o1", t0);
        Assert.Equal(DateTimeOffset.MinValue, processor.Watermark);
        await processor.ProcessAsync(new Order("o2", "p", 1m, t0), "o2", t0);
        await processor.ProcessAsync(new Order("o3", "p", 1m, t0.AddMinutes(1)), "o3", t0);

        // The two windows of o1 closed ([-5 min, 5 min) cut at MinValue, and [0, 10 min)); o2's and o3's are open.
        Assert.Equal([DateTimeOffset.MinValue, DateTimeOffset.MinValue], closed.Select(c => c.Key.Window.Start));
        Assert.Equal([1L, 1L], closed.Select(c => c.Value));
        var windows = await processor.QueryWindowsAsync<string, long>("counts", "p", DateTimeOffset.MinValue, DateTimeOffset.MaxValue);
        Assert.Equal([t0.AddMinutes(-5), t0], windows.Select(w => w.Key.Window.Start));
        Assert.Equal([2L, 2L], windows.Select(w => w.Value));
        await host.StopAsync();
    }

    /// <summary>
    /// The late handler ran as the event was processed, before its unit of work committed: a rolled-back unit of work (a
    /// sink that refused it) made the retry process the late event again, and the handler (and the late counter) saw it twice.
    /// </summary>
    [Fact]
    public async Task ExternalSource_ALateEventWhoseUnitOfWorkRollsBack_IsReportedOnceWhenItsRetryCommits()
    {
        using var host = await ProcessorScenario.StartHostAsync(_ => { });
        var t0 = DateTimeOffset.UnixEpoch;
        var late = new List<LateRecord>();
        var sink = new RefusingSink();
        sink.Answer.SetResult();
        var options = new StreamProcessorOptions { Source = StreamSource.External, OnLate = late.Add };
        await using var processor = new StreamProcessor("external-late-once", SinkAndWindows(sink), host.Services, options);
        await processor.StartAsync();
        await processor.ProcessAsync(new Order("o1", "p", 1m, t0.AddMinutes(1)), "o1", t0);
        await processor.ProcessAsync(new Order("o2", "p", 1m, t0.AddMinutes(20)), "o2", t0);

        var lateOrder = new Order("o3", "p", 1m, t0.AddMinutes(2)); // [0, 5) closed at 5 ≤ 20: late
        sink.Armed = true;
        await Assert.ThrowsAsync<InvalidOperationException>(async () => await processor.ProcessAsync(lateOrder, "o3", t0));
        Assert.Empty(late); // rolled back: not reported

        sink.Armed = false;
        await processor.ProcessAsync(lateOrder, "o3", t0);
        Assert.Equal("o3", ((Order)Assert.Single(late).Value!).OrderId);
        await host.StopAsync();
    }

    /// <summary>
    /// An event store source whose commit failed: the late handler had already seen the late event, and the restart that
    /// resumed from the last commit processed it again and reported it a second time.
    /// </summary>
    [Fact]
    public async Task EventStoreSource_ALateEventWhoseCommitFails_IsReportedOnceAfterTheRestartCommitsIt()
    {
        using var host = await ProcessorScenario.StartHostAsync(_ => { });
        var t0 = DateTimeOffset.UnixEpoch;
        var late = new List<LateRecord>();
        var sink = new RefusingSink();
        sink.Answer.SetResult();
        var topology = SinkAndWindows(sink);
        var options = new StreamProcessorOptions { OnLate = late.Add };
        await using (var processor = new StreamProcessor("store-late-once", topology, host.Services, options))
        {
            await processor.StartAsync();
            await AppendAsync(host, "order-1", new Order("o1", "p", 1m, t0.AddMinutes(1)));
            await AppendAsync(host, "order-2", new Order("o2", "p", 1m, t0.AddMinutes(20)));
            await CaughtUpAsync(host, processor);

            sink.Armed = true;
            await AppendAsync(host, "order-3", new Order("o3", "p", 1m, t0.AddMinutes(2))); // late
            await Assert.ThrowsAsync<InvalidOperationException>(() => processor.Completion.WaitAsync(TimeSpan.FromSeconds(30)));
            Assert.Empty(late); // its commit failed: not reported
        }

        sink.Armed = false;
        await using var again = new StreamProcessor("store-late-once", topology, host.Services, options);
        await again.StartAsync();
        await CaughtUpAsync(host, again);
        Assert.Equal("o3", ((Order)Assert.Single(late).Value!).OrderId);
        await host.StopAsync();
    }

    /// <summary>
    /// A late event that changed nothing else (no state, no output) left nothing to commit, so the checkpoint stayed before
    /// it: a plain restart read it again and the late handler saw it a second time.
    /// </summary>
    [Fact]
    public async Task EventStoreSource_ALateEventThatChangesNothingElse_IsNotReportedAgainAfterARestart()
    {
        using var host = await ProcessorScenario.StartHostAsync(_ => { });
        var t0 = DateTimeOffset.UnixEpoch;
        var late = new List<LateRecord>();
        var builder = new StreamBuilder();
        builder.Stream<Order>(o => o.PlacedAt).GroupBy(o => o.ProductId).WindowedBy(TumblingWindows.Of(TimeSpan.FromMinutes(5))).Count("per-5-minutes");
        var topology = builder.Build();
        var options = new StreamProcessorOptions { OnLate = late.Add };
        await using (var processor = new StreamProcessor("store-late-restart", topology, host.Services, options))
        {
            await processor.StartAsync();
            await AppendAsync(host, "order-1", new Order("o1", "p", 1m, t0.AddMinutes(20)));
            await CaughtUpAsync(host, processor);
            await AppendAsync(host, "order-2", new Order("o2", "p", 1m, t0.AddMinutes(2))); // late
            await CaughtUpAsync(host, processor);
            Assert.Single(late);
            await processor.StopAsync();
        }

        await using var again = new StreamProcessor("store-late-restart", topology, host.Services, options);
        await again.StartAsync();
        await CaughtUpAsync(host, again);
        Assert.Equal("o2", ((Order)Assert.Single(late).Value!).OrderId);
        await host.StopAsync();
    }

    /// <summary>
    /// The late handler runs after the commit, so an exception it throws can undo nothing: it must not fail the processor
    /// (whose later events would then wait for a restart), only be logged.
    /// </summary>
    [Fact]
    public async Task EventStoreSource_ALateHandlerThatThrows_IsLoggedAndTheProcessorGoesOn()
    {
        using var host = await ProcessorScenario.StartHostAsync(_ => { });
        var t0 = DateTimeOffset.UnixEpoch;
        var builder = new StreamBuilder();
        var byProduct = builder.Stream<Order>(o => o.PlacedAt).GroupBy(o => o.ProductId);
        byProduct.Count("counts");
        byProduct.WindowedBy(TumblingWindows.Of(TimeSpan.FromMinutes(5))).Count("per-5-minutes");
        var options = new StreamProcessorOptions { OnLate = _ => throw new InvalidOperationException("Simulated failure of the late handler.") };
        await using var processor = new StreamProcessor("late-handler-throws", builder.Build(), host.Services, options);
        await processor.StartAsync();
        await AppendAsync(host, "order-1", new Order("o1", "p", 1m, t0.AddMinutes(20)));
        await AppendAsync(host, "order-2", new Order("o2", "p", 1m, t0.AddMinutes(2))); // late
        await CaughtUpAsync(host, processor);
        await AppendAsync(host, "order-3", new Order("o3", "p", 1m, t0.AddMinutes(21)));
        await CaughtUpAsync(host, processor);

        Assert.Equal(3L, await processor.QueryAsync<string, long>("counts", "p"));
        Assert.False(processor.Completion.IsCompleted);
        await host.StopAsync();
    }

    /// <summary>
    /// An aggregator that throws on the second of the two hopping windows an event falls in: the event is dead-lettered as a
    /// whole, so neither the first window's count nor its output may commit. Regression: they did, and a replay of the dead
    /// letter counted that window twice.
    /// </summary>
    [Fact]
    public async Task EventStoreSource_AnEventThatFailsOnItsSecondWindow_IsDeadLetteredWithNothingOfItsFirstCommitted()
    {
        using var host = await ProcessorScenario.StartHostAsync(_ => { });
        var t0 = DateTimeOffset.UnixEpoch;
        var calls = 0;
        var outputs = new System.Collections.Concurrent.ConcurrentQueue<string>();
        var builder = new StreamBuilder();
        builder.Stream<Order>(o => o.PlacedAt).GroupBy(o => o.ProductId)
            .WindowedBy(HoppingWindows.Of(TimeSpan.FromMinutes(2), TimeSpan.FromMinutes(1))).RetainClosedWindowsFor(TimeSpan.FromDays(1))
            .Aggregate(() => 0L, (_, o, n) => o.OrderId == "bad" && Interlocked.Increment(ref calls) == 2 ? throw new InvalidOperationException("Simulated failure on the second window.") : n + 1, "per-window")
            .ToStream()
            .To(StreamSinks.Callback<Windowed<string>, long>(o => outputs.Enqueue($"{o.Key.Key} {o.Key.Window.Start:HH:mm} {o.Value}")));
        await using var processor = new StreamProcessor("fails-on-second-window", builder.Build(), host.Services);
        await processor.StartAsync();
        await AppendAsync(host, "order-1", new Order("bad", "p", 1m, t0.AddSeconds(70)));
        await AppendAsync(host, "order-2", new Order("good", "p", 1m, t0.AddSeconds(80)));

        // Closes both windows: each closes once and is kept, though the failed order had made the first before the good one.
        await AppendAsync(host, "order-3", new Order("later", "q", 1m, t0.AddMinutes(10)));
        await CaughtUpAsync(host, processor);

        var deadLetter = Assert.Single(await host.Services.GetRequiredService<IDeadLetterStore>().ListAsync(new DeadLetterQuery { Endpoint = "stream:fails-on-second-window" }));
        Assert.Contains("second window", deadLetter.ErrorMessage, StringComparison.Ordinal);
        var windows = await processor.QueryWindowsAsync<string, long>("per-window", "p", DateTimeOffset.MinValue, DateTimeOffset.MaxValue);
        Assert.Equal([1L, 1L], windows.Select(w => w.Value)); // the good order only, in [00:00, 00:02) and [00:01, 00:03)
        Assert.Equal(["p 00:00 1", "p 00:01 1", "q 00:09 1", "q 00:10 1"], outputs.Order(StringComparer.Ordinal));
        await host.StopAsync();
    }

    /// <summary>
    /// A stateless operator that throws on the second of two records its event fanned out to: the event is dead-lettered as a
    /// whole, so the record routed to a partition before the failure must not be counted. Regression: it was.
    /// </summary>
    [Fact]
    public async Task EventStoreSource_AnEventThatFailsAfterPartOfItWasRouted_IsDeadLetteredWithNothingOfItCounted()
    {
        using var host = await ProcessorScenario.StartHostAsync(_ => { });
        var t0 = DateTimeOffset.UnixEpoch;
        var calls = 0;
        var builder = new StreamBuilder();
        builder.Stream<Order>(o => o.PlacedAt)
            .FlatMap(o => new[] { o, o })
            .Map(o => o.OrderId == "bad" && Interlocked.Increment(ref calls) == 2 ? throw new InvalidOperationException("Simulated failure on the second copy.") : o)
            .GroupBy(o => o.ProductId).Count("counts");
        await using var processor = new StreamProcessor("fails-after-routing", builder.Build(), host.Services);
        await processor.StartAsync();
        await AppendAsync(host, "order-1", new Order("bad", "p", 1m, t0.AddSeconds(70)));
        await AppendAsync(host, "order-2", new Order("good", "p", 1m, t0.AddSeconds(80)));
        await CaughtUpAsync(host, processor);

        var deadLetter = Assert.Single(await host.Services.GetRequiredService<IDeadLetterStore>().ListAsync(new DeadLetterQuery { Endpoint = "stream:fails-after-routing" }));
        Assert.Contains("second copy", deadLetter.ErrorMessage, StringComparison.Ordinal);
        Assert.Equal(2L, await processor.QueryAsync<string, long>("counts", "p")); // the good order's two copies only
        await host.StopAsync();
    }

    /// <summary>
    /// A grouping key an operator refuses (here half of a surrogate pair, an emoji cut by an aggregate), reached through a stateless operator in the same
    /// task: the dead letter's fingerprint names the operator that refused it, as its reason does. Regression: it named the
    /// operator before, which had set itself current last.
    /// </summary>
    [Fact]
    public async Task EventStoreSource_AKeyAnOperatorRefuses_IsDeadLetteredUnderThatOperatorsFingerprint()
    {
        using var host = await ProcessorScenario.StartHostAsync(_ => { });
        var t0 = DateTimeOffset.UnixEpoch;
        var builder = new StreamBuilder();
        builder.Stream<Order>(o => o.PlacedAt).GroupBy(o => o.OrderId).Aggregate(() => "", (_, o, _) => o.ProductId[..2], "last-product")
            .ToStream().GroupBy(p => p).Count("per-product");
        await using var processor = new StreamProcessor("refused-key", builder.Build(), host.Services);
        await processor.StartAsync();
        await AppendAsync(host, "order-1", new Order("o1", "a\uD83D\uDE00", 1m, t0.AddSeconds(1)));
        await AppendAsync(host, "order-2", new Order("o2", "pq", 1m, t0.AddSeconds(2)));
        await CaughtUpAsync(host, processor);

        var deadLetter = Assert.Single(await host.Services.GetRequiredService<IDeadLetterStore>().ListAsync(new DeadLetterQuery { Endpoint = "stream:refused-key" }));
        Assert.Contains("surrogate", deadLetter.ErrorMessage, StringComparison.Ordinal);
        var refusing = deadLetter.ErrorMessage.Split('\'')[1];
        Assert.StartsWith("aggregate-", refusing, StringComparison.Ordinal);
        var expected = Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(Encoding.UTF8.GetBytes(typeof(StreamKeyException).FullName + "|" + refusing)))[..16];
        Assert.Equal(expected, deadLetter.Fingerprint);
        Assert.Equal(1L, await processor.QueryAsync<string, long>("per-product", "pq"));
        await host.StopAsync();
    }

    /// <summary>
    /// One event failing in two branches with state of one topology: each branch's record is undone and dead-lettered on its
    /// own (distinct ids, each reason naming its operator), a branch that took the event keeps it, and a retry from the dead
    /// letters refuses each, so nothing (least of all the branch that succeeded) runs the event again.
    /// </summary>
    [Fact]
    public async Task EventStoreSource_AnEventFailingInTwoBranches_IsDeadLetteredOncePerBranch_AndNeitherRetryRunsItAgain()
    {
        using var host = await ProcessorScenario.StartHostAsync(_ => { });
        var t0 = DateTimeOffset.UnixEpoch;
        var builder = new StreamBuilder();
        var grouped = builder.Stream<Order>(o => o.PlacedAt).GroupBy(o => o.ProductId);
        grouped.Aggregate(() => 0L, (_, o, n) => o.OrderId.StartsWith("bad", StringComparison.Ordinal) ? throw new InvalidOperationException("left refused " + o.OrderId) : n + 1, "left");
        grouped.Aggregate(() => 0L, (_, o, n) => o.OrderId == "bad-both" ? throw new InvalidOperationException("right refused " + o.OrderId) : n + 1, "right");
        await using var processor = new StreamProcessor("two-branches", builder.Build(), host.Services);
        await processor.StartAsync();
        await AppendAsync(host, "order-1", new Order("bad-both", "p", 1m, t0.AddSeconds(1)));
        await AppendAsync(host, "order-2", new Order("bad-left", "p", 1m, t0.AddSeconds(2)));
        await AppendAsync(host, "order-3", new Order("good", "p", 1m, t0.AddSeconds(3)));
        await CaughtUpAsync(host, processor);

        var deadLetters = await host.Services.GetRequiredService<IDeadLetterStore>().ListAsync(new DeadLetterQuery { Endpoint = "stream:two-branches" });
        var both = deadLetters.Where(d => d.ErrorMessage.Contains("bad-both", StringComparison.Ordinal)).ToList();
        Assert.Equal(2, both.Count);
        Assert.NotEqual(both[0].Id, both[1].Id);
        Assert.Equal(both[0].Envelope.MessageId, both[1].Envelope.MessageId);
        Assert.NotEqual(both[0].Fingerprint, both[1].Fingerprint);
        Assert.Contains(both, d => d.ErrorMessage.Contains("left refused", StringComparison.Ordinal));
        Assert.Contains(both, d => d.ErrorMessage.Contains("right refused", StringComparison.Ordinal));
        Assert.Single(deadLetters, d => d.ErrorMessage.Contains("left refused bad-left", StringComparison.Ordinal));
        Assert.Equal(3, deadLetters.Count);
        Assert.Equal(1L, await processor.QueryAsync<string, long>("left", "p"));  // good
        Assert.Equal(2L, await processor.QueryAsync<string, long>("right", "p")); // bad-left, good

        var manager = host.Services.GetRequiredService<DeadLetterManager>();
        foreach (var deadLetter in deadLetters)
        {
            Assert.Equal(DeadLetterRetryOutcome.Refused, await manager.RetryAsync(deadLetter.Id));
        }

        await CaughtUpAsync(host, processor);
        Assert.Equal(3, (await host.Services.GetRequiredService<IDeadLetterStore>().ListAsync(new DeadLetterQuery { Endpoint = "stream:two-branches" })).Count);
        Assert.Equal(1L, await processor.QueryAsync<string, long>("left", "p"));
        Assert.Equal(2L, await processor.QueryAsync<string, long>("right", "p"));
        await host.StopAsync();
    }

    /// <summary>Appends <paramref name="order"/> as the first event of <paramref name="stream"/>.</summary>
    private static async Task AppendAsync(IHost host, string stream, Order order) =>
        await host.Services.GetRequiredService<IEventStore>().AppendAsync(stream, ExpectedVersion.NoStream, [host.Services.GetRequiredService<EnvelopeFactory>().Create(order)]);

    /// <summary>Waits until <paramref name="processor"/> has committed every event appended so far.</summary>
    private static async Task CaughtUpAsync(IHost host, StreamProcessor processor) =>
        await processor.WaitForPositionAsync(await host.Services.GetRequiredService<IEventStore>().GetLastPositionAsync()).WaitAsync(TimeSpan.FromSeconds(30));

    /// <summary>Orders go to <paramref name="sink"/> and are counted per product in 5-minute windows: a late order reaches both.</summary>
    private static StreamTopology SinkAndWindows(RefusingSink sink)
    {
        var builder = new StreamBuilder();
        var orders = builder.Stream<Order>(o => o.PlacedAt);
        orders.To(sink);
        orders.GroupBy(o => o.ProductId).WindowedBy(TumblingWindows.Of(TimeSpan.FromMinutes(5))).Count("per-5-minutes");
        return builder.Build();
    }

    /// <summary>A sink whose write, once armed, waits for the test and then refuses the commit.</summary>
    private sealed class RefusingSink : IStreamSink<string, Order>
    {
        public TaskCompletionSource Entered { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public TaskCompletionSource Answer { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public bool Armed { get; set; }

        public async ValueTask WriteAsync(IReadOnlyList<StreamOutput<string, Order>> outputs, StreamSinkContext context, CancellationToken cancellationToken = default)
        {
            if (!Armed)
            {
                return;
            }

            Entered.TrySetResult();
            await Answer.Task;
            throw new InvalidOperationException("Simulated failure: the last commit is refused.");
        }
    }
}
