using System.Collections.Concurrent;
using System.Diagnostics;
using System.Diagnostics.Metrics;
using Herald.Diagnostics;
using Herald.EventSourcing;
using Herald.Messages;
using Herald.Projections;
using Herald.Reliability.DeadLetters;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Xunit;

namespace Herald.Conformance.Projections;

/// <summary>
/// Batched apply (<see cref="ProjectionOptions.CommitEvery"/>): the events of a read are applied in one unit of work with
/// one checkpoint; a batch that fails is rolled back and its events run one by one, so a poison event is dead-lettered
/// alone and the others are applied once; a batch stopped in the middle keeps nothing.
/// </summary>
public abstract partial class ProjectionConformance
{
    [Fact]
    public async Task ABatchWithAPoisonEventInTheMiddle_AppliesTheOthersOnce_DeadLettersThePoisonOnce_AndMovesPastIt()
    {
        var store = NewStore();
        var projection = new BatchTallies();
        using var host = await StartAsync(store, projection, noRetries: true, batchSize: 50, commitEvery: 500);
        var events = host.Services.GetRequiredService<IEventStore>();

        // One append, so one read of the log finds all 20 events: a single batch with amount 13 in the middle.
        var last = (await events.AppendAsync("tally-batch", ExpectedVersion.NoStream, [.. Enumerable.Range(1, 20).Select(i => Added(host, "b", i))])).LastPosition;
        var manager = host.Services.GetRequiredService<ProjectionManager>();
        await Running(manager, BatchTallies.ProjectionName);
        await manager.WaitForPositionAsync(BatchTallies.ProjectionName, last).WaitAsync(Eventually.DefaultTimeout);

        var tally = await host.Services.GetRequiredService<ReadModels>().GetAsync(BatchTallies.Table, "b");
        Assert.NotNull(tally);
        Assert.Equal(210 - 13, tally.Sum);
        Assert.Equal(19, tally.Count);
        var deadLetter = Assert.Single(await host.Services.GetRequiredService<IDeadLetterStore>().ListAsync(new DeadLetterQuery { Endpoint = BatchTallies.ProjectionName }));
        Assert.Contains("unlucky", deadLetter.ErrorMessage, StringComparison.Ordinal);
        Assert.Equal(last, await host.Services.GetRequiredService<ICheckpointStore>().GetCheckpointAsync(BatchTallies.ProjectionName));

        // The events before the poison ran in the batch and again alone (its rollback kept none of it); those after it, once.
        Assert.Equal(2, projection.Calls(1));
        Assert.Equal(2, projection.Calls(13));
        Assert.Equal(1, projection.Calls(20));
        await host.StopAsync();
    }

    [Fact]
    public async Task AnUndecodableEventInABatch_IsDeadLetteredOnce_AndCountedAsOneFailure()
    {
        // The batch decodes ahead of its run, finds the poison, and hands every event to the chain one by one, which
        // dead-letters it: messages.failed counted it in both places.
        using var failures = new ProjectionMeasurements(MetricNames.MessagesFailed);
        var store = NewStore();
        var projection = new BatchTallies();
        using var host = await StartAsync(store, projection, noRetries: true, batchSize: 50, commitEvery: 500);
        var events = host.Services.GetRequiredService<IEventStore>();

        var last = (await events.AppendAsync(
            "tally-undecodable",
            ExpectedVersion.NoStream,
            [.. Enumerable.Range(1, 12).Select(i => i == 10 ? Added(host, "u", i) with { Body = "not json"u8.ToArray() } : Added(host, "u", i))])).LastPosition;
        var manager = host.Services.GetRequiredService<ProjectionManager>();
        await Running(manager, BatchTallies.ProjectionName);
        await manager.WaitForPositionAsync(BatchTallies.ProjectionName, last).WaitAsync(Eventually.DefaultTimeout);

        var tally = await host.Services.GetRequiredService<ReadModels>().GetAsync(BatchTallies.Table, "u");
        Assert.NotNull(tally);
        Assert.Equal(78 - 10, tally.Sum); // 1..12 (no 13, the handler's own poison) but the undecodable 10
        Assert.Single(await host.Services.GetRequiredService<IDeadLetterStore>().ListAsync(new DeadLetterQuery { Endpoint = BatchTallies.ProjectionName }));
        Assert.Equal(1, failures.Total);
        await host.StopAsync();
    }

    [Fact]
    public async Task EveryEventOfABatch_RecordsItsProcessingDuration_AsAnEventAppliedAloneDoes()
    {
        // Only the events applied alone (through the chain's trace step) recorded herald.message.processing.duration: a
        // projection applying in batches reported none for the events of its committed batches.
        using var durations = new ProjectionMeasurements(MetricNames.ProcessingDuration);
        var store = NewStore();
        using var host = await StartAsync(store, new BatchTallies(), noRetries: true, batchSize: 50, commitEvery: 500);

        // One append, so one read finds the 12 events: one batch, no poison in it.
        var last = (await host.Services.GetRequiredService<IEventStore>().AppendAsync(
            "tally-timed", ExpectedVersion.NoStream, [.. Enumerable.Range(1, 12).Select(i => Added(host, "t", i))])).LastPosition;
        var manager = host.Services.GetRequiredService<ProjectionManager>();
        await Running(manager, BatchTallies.ProjectionName);
        await manager.WaitForPositionAsync(BatchTallies.ProjectionName, last).WaitAsync(Eventually.DefaultTimeout);

        Assert.Equal(12, (await host.Services.GetRequiredService<ReadModels>().GetAsync(BatchTallies.Table, "t"))?.Count);
        Assert.Equal(12, durations.Count);
        await host.StopAsync();
    }

    [Fact]
    public async Task ABatchWhoseCommitFails_KeepsNothingOfIt_AndItsEventsAreAppliedOneByOne()
    {
        var store = NewStore();
        var projection = new BatchTallies();
        using var host = await StartAsync(store, projection, noRetries: true, batchSize: 50, commitEvery: 500);
        var events = host.Services.GetRequiredService<IEventStore>();

        // Amount 77 enlists a change that throws: at the commit on engines that run changes there, so the batch's commit fails.
        int[] amounts = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 77, 20, 21, 22, 23, 24];
        var last = (await events.AppendAsync("tally-commit", ExpectedVersion.NoStream, [.. amounts.Select(i => Added(host, "c", i))])).LastPosition;
        var manager = host.Services.GetRequiredService<ProjectionManager>();
        await Running(manager, BatchTallies.ProjectionName);
        await manager.WaitForPositionAsync(BatchTallies.ProjectionName, last).WaitAsync(Eventually.DefaultTimeout);

        // Had any of the failed batch's writes been kept, the events applied again one by one would count twice.
        var tally = await host.Services.GetRequiredService<ReadModels>().GetAsync(BatchTallies.Table, "c");
        Assert.NotNull(tally);
        Assert.Equal(amounts.Sum() - 77, tally.Sum);
        Assert.Equal(amounts.Length - 1, tally.Count);
        var deadLetter = Assert.Single(await host.Services.GetRequiredService<IDeadLetterStore>().ListAsync(new DeadLetterQuery { Endpoint = BatchTallies.ProjectionName }));
        Assert.Contains("refused", deadLetter.ErrorMessage, StringComparison.Ordinal);
        Assert.Equal(last, await host.Services.GetRequiredService<ICheckpointStore>().GetCheckpointAsync(BatchTallies.ProjectionName));
        Assert.Equal(2, projection.Calls(1));
        await host.StopAsync();
    }

    [Fact]
    public async Task ABatchsSpan_LinksTheTraceOfEveryEventItApplies()
    {
        // The batch's span had no parent and no links: a projection applying events in batches started a trace of its
        // own for each, and nothing led from the request or message that stored the events to the projection's work.
        var batches = new ConcurrentQueue<Activity>();
        using var listener = new ActivityListener
        {
            ShouldListenTo = source => source.Name == HeraldDiagnostics.Name,
            Sample = (ref ActivityCreationOptions<ActivityContext> _) => ActivitySamplingResult.AllDataAndRecorded,
            ActivityStopped = activity =>
            {
                if (activity.OperationName == "process batch " + BatchTallies.ProjectionName)
                {
                    batches.Enqueue(activity);
                }
            },
        };
        ActivitySource.AddActivityListener(listener);
        var store = NewStore();
        using var host = await StartAsync(store, new BatchTallies(), noRetries: true, batchSize: 50, commitEvery: 500);
        var events = host.Services.GetRequiredService<IEventStore>();

        // Two saves under two traces, read by the runner in one batch.
        var traces = new[] { ActivityTraceId.CreateRandom(), ActivityTraceId.CreateRandom() };
        var appended = new List<Envelope>();
        for (var save = 0; save < traces.Length; save++)
        {
            var traceParent = $"00-{traces[save]}-{ActivitySpanId.CreateRandom()}-01";
            appended.AddRange(Enumerable.Range(1, 5).Select(i => Added(host, "t", i + (save * 5)).WithHeader(HeaderNames.TraceParent, traceParent)));
        }

        var last = (await events.AppendAsync("tally-traced", ExpectedVersion.NoStream, appended)).LastPosition;
        var manager = host.Services.GetRequiredService<ProjectionManager>();
        await Running(manager, BatchTallies.ProjectionName);
        await manager.WaitForPositionAsync(BatchTallies.ProjectionName, last).WaitAsync(Eventually.DefaultTimeout);

        await Eventually.UntilAsync(
            () => batches.Any(b => b.Links.Any(l => l.Context.TraceId == traces[0])),
            "the batch's span stops, linked to the first save's trace");
        var batch = Assert.Single(batches, b => b.Links.Any(l => l.Context.TraceId == traces[0]));
        Assert.Contains(batch.Links, l => l.Context.TraceId == traces[1]);
        await host.StopAsync();
    }

    [Fact]
    public async Task CommitEveryOne_AndCommitEveryFiveHundred_BuildTheSameReadModel()
    {
        var models = new List<IReadOnlyList<BatchTally>>();
        foreach (var commitEvery in new[] { 1, 500 })
        {
            var store = NewStore();
            using var host = await StartAsync(store, new BatchTallies(), noRetries: true, batchSize: 64, commitEvery: commitEvery);
            var events = host.Services.GetRequiredService<IEventStore>();
            var last = 0L;
            for (var append = 0; append < 6; append++)
            {
                // Keys shared across appends, amount 0 deletes its key, amount 13 is a poison event.
                last = (await events.AppendAsync(
                    $"tally-same{append}",
                    ExpectedVersion.NoStream,
                    [.. Enumerable.Range(0, 40).Select(i => Added(host, "s" + ((i + append) % 9), (i * 7 + append) % 17))])).LastPosition;
            }

            var manager = host.Services.GetRequiredService<ProjectionManager>();
            await Running(manager, BatchTallies.ProjectionName);
            await manager.WaitForPositionAsync(BatchTallies.ProjectionName, last).WaitAsync(TimeSpan.FromSeconds(60));
            models.Add((await host.Services.GetRequiredService<ReadModels>().QueryAsync(BatchTallies.Table, new ReadModelQuery())).Items);
            await host.StopAsync();
        }

        Assert.NotEmpty(models[0]);
        Assert.Equal(models[0], models[1]);
    }

    [Fact]
    public async Task AStopInTheMiddleOfABatch_KeepsNeitherItsWritesNorItsCheckpoint_AndTheNextRunnerAppliesEachEventOnce()
    {
        // No 13 among them (the poison amount): ten events, then one that blocks, then five more.
        int[] amounts = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 999, 20, 21, 22, 23, 24];
        var store = NewStore();
        var blocking = new BatchTallies { BlockOn = 999 };
        long first, last;
        using (var host = await StartAsync(store, blocking, batchSize: 50, commitEvery: 500))
        {
            var events = host.Services.GetRequiredService<IEventStore>();
            var appended = await events.AppendAsync("tally-stop", ExpectedVersion.NoStream, [.. amounts.Select(i => Added(host, "stop", i))]);
            last = appended.LastPosition;
            first = (await events.ReadStreamAsync("tally-stop", maxCount: 1).FirstAsync()).Position;

            // Ten events are applied in the batch's unit of work when the eleventh blocks; then the host stops under it.
            await blocking.Blocked.Task.WaitAsync(Eventually.DefaultTimeout);
            Assert.Equal(1, blocking.Calls(10));
            await host.StopAsync();

            Assert.Null(await host.Services.GetRequiredService<ReadModels>().GetAsync(BatchTallies.Table, "stop"));
            var checkpoint = await host.Services.GetRequiredService<ICheckpointStore>().GetCheckpointAsync(BatchTallies.ProjectionName);
            Assert.True(checkpoint is null || checkpoint < first, $"the checkpoint {checkpoint} must stay before the batch (from {first})");
        }

        using var next = await StartAsync(store, new BatchTallies(), batchSize: 50, commitEvery: 500);
        var manager = next.Services.GetRequiredService<ProjectionManager>();
        await Running(manager, BatchTallies.ProjectionName);
        await manager.WaitForPositionAsync(BatchTallies.ProjectionName, last).WaitAsync(Eventually.DefaultTimeout);

        var tally = await next.Services.GetRequiredService<ReadModels>().GetAsync(BatchTallies.Table, "stop");
        Assert.NotNull(tally);
        Assert.Equal(amounts.Sum(), tally.Sum);
        Assert.Equal(amounts.Length, tally.Count);
        await next.StopAsync();
    }

    /// <summary>The read model of <see cref="BatchTallies"/>.</summary>
    public sealed record BatchTally(string Key, long Sum, int Count);

    /// <summary>
    /// Sums amounts per key and counts its handler's calls per amount: amount 0 deletes the key, amount 13 writes then throws
    /// (a poison event), amount 77 enlists a change that throws (at the commit where the engine runs changes there), and
    /// <see cref="BlockOn"/> waits until the runner stops.
    /// </summary>
    public sealed class BatchTallies : Projection
    {
        public const string ProjectionName = "conformance-batch-tallies";

        public static readonly ReadModelTable<BatchTally> Table = new("conformance_batch_tallies");

        private readonly ConcurrentDictionary<int, int> _calls = new();

        public BatchTallies()
            : base(ProjectionName)
        {
            Table(Table);
            On<TallyAdded>(async (e, context, token) =>
            {
                _calls.AddOrUpdate(e.Amount, 1, (_, n) => n + 1);
                if (e.Amount == 0)
                {
                    await context.DeleteAsync(Table, e.Key);
                    return;
                }

                if (e.Amount == 77)
                {
                    await context.UpdateAsync<BatchTally>(Table, e.Key + "-refused", _ => throw new InvalidOperationException("change refused"));
                }

                await context.UpdateAsync(Table, e.Key, t => t is null ? new BatchTally(e.Key, e.Amount, 1) : t with { Sum = t.Sum + e.Amount, Count = t.Count + 1 });
                if (e.Amount == 13)
                {
                    throw new InvalidOperationException("unlucky amount");
                }

                if (e.Amount == BlockOn)
                {
                    Blocked.TrySetResult();
                    await Task.Delay(Timeout.Infinite, token);
                }
            });
        }

        /// <summary>The amount whose handler waits until the runner stops; none by default.</summary>
        public int? BlockOn { get; init; }

        /// <summary>Completes when the handler of <see cref="BlockOn"/> starts waiting.</summary>
        public TaskCompletionSource Blocked { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        /// <summary>How many times the handler ran for <paramref name="amount"/>.</summary>
        public int Calls(int amount) => _calls.GetValueOrDefault(amount);
    }

    /// <summary>The measurements of one Herald instrument on the endpoint of <see cref="BatchTallies"/>: how many, and their sum.</summary>
    private sealed class ProjectionMeasurements : IDisposable
    {
        private readonly MeterListener _listener;
        private long _total;
        private int _count;

        public ProjectionMeasurements(string instrument)
        {
            _listener = new MeterListener
            {
                InstrumentPublished = (published, listener) =>
                {
                    if (published.Meter.Name == HeraldDiagnostics.Name && published.Name == instrument)
                    {
                        listener.EnableMeasurementEvents(published);
                    }
                },
            };
            _listener.SetMeasurementEventCallback<long>((_, value, tags, _) => Record(value, tags));
            _listener.SetMeasurementEventCallback<double>((_, value, tags, _) => Record((long)value, tags));
            _listener.Start();
        }

        public long Total => Interlocked.Read(ref _total);

        public int Count => Volatile.Read(ref _count);

        public void Dispose() => _listener.Dispose();

        private void Record(long value, ReadOnlySpan<KeyValuePair<string, object?>> tags)
        {
            foreach (var tag in tags)
            {
                if (tag.Key == MetricNames.EndpointTag && Equals(tag.Value, BatchTallies.ProjectionName))
                {
                    Interlocked.Add(ref _total, value);
                    Interlocked.Increment(ref _count);
                }
            }
        }
    }
}
