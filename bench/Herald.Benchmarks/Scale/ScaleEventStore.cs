using System.Diagnostics;
using Herald.Benchmarks.EventStore;
using Herald.EventSourcing;
using Herald.EventSourcing.Subscriptions;
using Herald.Messages;

namespace Herald.Benchmarks.Scale;

/// <summary>An event store grown step by step: bulk-loaded between steps, measured at each.</summary>
internal abstract class ScaleEventStore : IAsyncDisposable
{
    /// <summary>Events per append while bulk-loading between steps (an import writes large batches).</summary>
    protected const int LoadBatch = 10_000;

    /// <summary>Concurrent appenders while bulk-loading.</summary>
    protected const int LoadTasks = 4;

    private long _count;

    public abstract string Name { get; }

    /// <summary>Whether a catch-up subscription is measured (Herald's <see cref="EventSubscription"/>).</summary>
    public virtual bool HasSubscription => false;

    /// <summary>How many events the store holds.</summary>
    public long Count => Interlocked.Read(ref _count);

    /// <summary>Bulk-load rate of the last growth, events per second (to predict the next step's time).</summary>
    public double LoadRate { get; private set; } = 30_000;

    /// <summary>Rate of the last catch-up subscription from 0, events per second (to predict the next step's time).</summary>
    public double CatchUpRate { get; set; } = 50_000;

    /// <summary>Seconds the last step's measurements took besides the fill and the catch-up (to predict the next step's time).</summary>
    public double MeasureSeconds { get; set; } = 10;

    /// <summary>
    /// Predicted seconds to grow from <paramref name="from"/> events to the step <paramref name="step"/> and measure there, at the
    /// last rates; 20 % added, since fills and catch-ups slow down somewhat as the store grows.
    /// </summary>
    public double Predict(long from, long step) =>
        1.2 * (Math.Max(0, step - from) / LoadRate + MeasureSeconds + (HasSubscription ? step / CatchUpRate : 0));

    public abstract Task StartAsync(CancellationToken cancellationToken);

    /// <summary>Appends batches of <see cref="LoadBatch"/> events to new streams, <see cref="LoadTasks"/> at a time, until the store holds <paramref name="target"/>.</summary>
    public async Task GrowAsync(long target, CancellationToken cancellationToken)
    {
        var start = Count;
        if (start >= target)
        {
            return;
        }

        var clock = Stopwatch.StartNew();
        var claimed = start;
        await Task.WhenAll(Enumerable.Range(0, LoadTasks).Select(_ => Task.Run(async () =>
        {
            while (true)
            {
                var end = Interlocked.Add(ref claimed, LoadBatch);
                if (end - LoadBatch >= target)
                {
                    return;
                }

                var size = (int)Math.Min(LoadBatch, target - (end - LoadBatch));
                await AppendBatchAsync(size, cancellationToken);
            }
        }, cancellationToken)));
        LoadRate = (Count - start) / clock.Elapsed.TotalSeconds;
    }

    /// <summary>Batch appends: <paramref name="events"/> events in appends of 100 to new streams, one writer; events per second.</summary>
    public async Task<double> MeasureBatchesAsync(int events, CancellationToken cancellationToken)
    {
        var clock = Stopwatch.StartNew();
        for (var done = 0; done < events; done += 100)
        {
            await AppendBatchAsync(100, cancellationToken);
        }

        return events / clock.Elapsed.TotalSeconds;
    }

    /// <summary>Single-event appends by <paramref name="writers"/> writers for <paramref name="duration"/>; events per second.</summary>
    public async Task<double> MeasureWritersAsync(int writers, TimeSpan duration, CancellationToken cancellationToken)
    {
        var appended = 0L;
        var clock = Stopwatch.StartNew();
        await Task.WhenAll(Enumerable.Range(0, writers).Select(w => Task.Run(async () =>
        {
            for (var i = 0; clock.Elapsed < duration; i++)
            {
                await AppendOneAsync(w, i, cancellationToken);
                Interlocked.Increment(ref appended);
            }
        }, cancellationToken)));
        return appended / clock.Elapsed.TotalSeconds;
    }

    /// <summary>Reads <paramref name="events"/> events of <c>$all</c> from the middle of the store; events per second.</summary>
    public async Task<double> MeasureReadMiddleAsync(int events, CancellationToken cancellationToken)
    {
        var clock = Stopwatch.StartNew();
        var read = await ReadMiddleAsync(events, cancellationToken);
        if (read != events)
        {
            throw new InvalidOperationException($"{Name}: read {read} events of $all from the middle, expected {events}.");
        }

        return events / clock.Elapsed.TotalSeconds;
    }

    /// <summary>A catch-up subscription from position 0 to the end: events per second and the peak working set (bytes) while it ran.</summary>
    public virtual Task<(double Rate, long PeakWorkingSet)> MeasureCatchUpAsync(CancellationToken cancellationToken) =>
        throw new NotSupportedException();

    public abstract ValueTask DisposeAsync();

    protected void Added(int events) => Interlocked.Add(ref _count, events);

    protected abstract Task AppendBatchAsync(int size, CancellationToken cancellationToken);

    protected abstract Task AppendOneAsync(int writer, int index, CancellationToken cancellationToken);

    protected abstract Task<int> ReadMiddleAsync(int events, CancellationToken cancellationToken);
}

/// <summary>A Herald event store (PostgreSQL or SQLite) through the public port.</summary>
internal sealed class HeraldScaleStore(string name, Func<CancellationToken, Task<IEventStoreConnection>> open, Func<ValueTask> cleanUp) : ScaleEventStore
{
    private readonly MessageTypeRegistry _registry = CreateRegistry();
    private readonly string _runId = Guid.NewGuid().ToString("N")[..8];
    private readonly Lock _gate = new();

    // (events in the store, the position of the last of them) after each bulk append: where the middle of the log is.
    private readonly List<(long Count, long Position)> _marks = [];
    private EnvelopeFactory? _envelopes;
    private IEventStoreConnection? _store;
    private int _sequence;
    private int _subscriptions;

    public override string Name => name;

    public override bool HasSubscription => true;

    private IEventStoreConnection Store => _store ?? throw new InvalidOperationException("Not started.");

    public override async Task StartAsync(CancellationToken cancellationToken)
    {
        _envelopes = new EnvelopeFactory(_registry, new SystemTextJsonMessageSerializer(), TimeProvider.System);
        _store = await open(cancellationToken);
    }

    public override async Task<(double Rate, long PeakWorkingSet)> MeasureCatchUpAsync(CancellationToken cancellationToken)
    {
        var last = await Store.GetLastPositionAsync(cancellationToken);
        var seen = 0L;
        var caughtUp = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        // The bulk fill before (appends of 10,000 events) leaves a large heap committed; give it back, so the peak is the
        // catch-up's own working set and not what the fill left.
        GC.Collect(2, GCCollectionMode.Aggressive, blocking: true, compacting: true);
        GC.WaitForPendingFinalizers();
        await using var sampler = new WorkingSetSampler();
        var clock = Stopwatch.StartNew();
        var options = new EventSubscriptionOptions { SubscriptionId = $"scale-{_runId}-{Interlocked.Increment(ref _subscriptions)}", CheckpointEvery = 10_000 };
        await using (var subscription = await EventSubscription.StartNewAsync(Store, Store, (e, _) =>
        {
            seen++;
            if (e.Position >= last)
            {
                caughtUp.TrySetResult();
            }

            return ValueTask.CompletedTask;
        }, options, cancellationToken))
        {
            await caughtUp.Task.WaitAsync(TimeSpan.FromMinutes(10), cancellationToken);
            await subscription.StopAsync(cancellationToken);
        }

        return (seen / clock.Elapsed.TotalSeconds, sampler.Peak);
    }

    public override async ValueTask DisposeAsync()
    {
        if (_store is not null)
        {
            await _store.DisposeAsync();
        }

        await cleanUp();
    }

    protected override async Task AppendBatchAsync(int size, CancellationToken cancellationToken)
    {
        var events = new Envelope[size];
        for (var i = 0; i < events.Length; i++)
        {
            events[i] = Next();
        }

        var result = await Store.AppendAsync($"ledger-{Guid.CreateVersion7():N}", ExpectedVersion.NoStream, events, cancellationToken);
        Added(size);
        lock (_gate)
        {
            _marks.Add((Count, result.LastPosition));
        }
    }

    protected override async Task AppendOneAsync(int writer, int index, CancellationToken cancellationToken)
    {
        await Store.AppendAsync($"account-{_runId}w{writer}s{index % 64}", ExpectedVersion.Any, [Next()], cancellationToken);
        Added(1);
    }

    protected override async Task<int> ReadMiddleAsync(int events, CancellationToken cancellationToken)
    {
        long from;
        lock (_gate)
        {
            var half = Count / 2;
            from = _marks.Where(m => m.Count <= half).Select(m => m.Position).DefaultIfEmpty(0).Max();
        }

        var read = 0;
        await foreach (var e in Store.ReadAllAsync(from, null, events, cancellationToken))
        {
            read += e.Envelope.Body.Length > 0 ? 1 : 0;
        }

        return read;
    }

    private static MessageTypeRegistry CreateRegistry()
    {
        var registry = new MessageTypeRegistry();
        registry.Register<AccountCredited>("account-credited");
        return registry;
    }

    private Envelope Next() => _envelopes!.Create(AccountCredited.Next(Interlocked.Increment(ref _sequence)));
}
