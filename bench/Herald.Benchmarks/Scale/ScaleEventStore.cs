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

    /// <summary>
    /// Batch appends: <paramref name="events"/> events in appends of 100 to new streams, one writer, timed in three equal parts;
    /// the median part's events per second (one part slowed by the shared machine does not make the point).
    /// </summary>
    public async Task<double> MeasureBatchesAsync(int events, CancellationToken cancellationToken)
    {
        var part = Math.Max(100, events / 300 * 100);
        var rates = new double[3];
        for (var p = 0; p < rates.Length; p++)
        {
            var clock = Stopwatch.StartNew();
            for (var done = 0; done < part; done += 100)
            {
                await AppendBatchAsync(100, cancellationToken);
            }

            rates[p] = part / clock.Elapsed.TotalSeconds;
        }

        return Median(rates);
    }

    /// <summary>The median of three timings of <paramref name="read"/>, which returns how many events it read; events per second.</summary>
    protected static async Task<double> MedianRateAsync(Func<Task<int>> read)
    {
        var rates = new double[3];
        for (var p = 0; p < rates.Length; p++)
        {
            var clock = Stopwatch.StartNew();
            var count = await read();
            rates[p] = count / clock.Elapsed.TotalSeconds;
        }

        return Median(rates);
    }

    private static double Median(double[] values)
    {
        Array.Sort(values);
        return values[values.Length / 2];
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

    /// <summary>Reads <paramref name="events"/> events of <c>$all</c> from the middle of the store (median of three reads); events per second.</summary>
    public Task<double> MeasureReadMiddleAsync(int events, CancellationToken cancellationToken) =>
        MedianRateAsync(async () =>
        {
            var read = await ReadMiddleAsync(events, cancellationToken);
            return read == events ? read : throw new InvalidOperationException($"{Name}: read {read} events of $all from the middle, expected {events}.");
        });

    /// <summary>The names of the rows <see cref="MeasureMoreReadsAsync"/> measures (none unless a store has more to measure).</summary>
    public virtual IReadOnlyList<string> MoreReads(int events) => [];

    /// <summary>Events per second of each read named by <see cref="MoreReads"/>, in that order.</summary>
    public virtual Task<double[]> MeasureMoreReadsAsync(int events, CancellationToken cancellationToken) => Task.FromResult(Array.Empty<double>());

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

    // (events in the store, the position of the last of them, the stream) after each append to a new stream: where the middle
    // of the log is, and which streams are there to read.
    private readonly List<(long Count, long Position, string Stream, int Size)> _marks = [];
    private int _streams;
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

        // Four categories, so that a category read from the middle of $all picks one event in four.
        var stream = $"ledger{Interlocked.Increment(ref _streams) % 4}-{Guid.CreateVersion7():N}";
        var result = await Store.AppendAsync(stream, ExpectedVersion.NoStream, events, cancellationToken);
        Added(size);
        lock (_gate)
        {
            _marks.Add((Count, result.LastPosition, stream, size));
        }
    }

    protected override async Task AppendOneAsync(int writer, int index, CancellationToken cancellationToken)
    {
        await Store.AppendAsync($"account-{_runId}w{writer}s{index % 64}", ExpectedVersion.Any, [Next()], cancellationToken);
        Added(1);
    }

    protected override async Task<int> ReadMiddleAsync(int events, CancellationToken cancellationToken)
    {
        return await ReadAllAsync(PositionAt(Count / 2), null, events, cancellationToken);
    }

    public override IReadOnlyList<string> MoreReads(int events) =>
    [
        $"$all read of {events:N0} events from the start",
        $"$all read from about {events + 1_000:N0} events before the end",
        $"$all read of {events / 4:N0} events of one category (a quarter of the log) from the middle",
        $"stream read forward, {LoadBatch:N0} events of a stream from the middle of the log",
        $"stream read backward, {LoadBatch:N0} events of a stream from the middle of the log",
    ];

    public override async Task<double[]> MeasureMoreReadsAsync(int events, CancellationToken cancellationToken)
    {
        (string Stream, int Size) stream;
        long from;
        lock (_gate)
        {
            // The middle of the log, or the last bulk-loaded stream when the measurements' own appends (single-event writers
            // add tens of thousands of events in a quiet run) moved the middle past the bulk load of the first step.
            var half = Count / 2;
            var lastBulk = _marks.Where(m => m.Size >= LoadBatch).Select(m => m.Count).DefaultIfEmpty(0).Max();
            from = Math.Min(half, lastBulk);
            stream = _marks.Where(m => m.Count >= from).OrderByDescending(m => m.Size).ThenBy(m => m.Count).Select(m => (m.Stream, m.Size)).FirstOrDefault();
        }

        if (stream.Stream is null)
        {
            throw new InvalidOperationException($"{Name}: no stream past the middle of the log.");
        }

        // Just before the chosen stream, so the category read finds at least its events after the position.
        var middle = PositionAt(from - 1);
        var end = PositionAt(Count - events - 1_000);
        var category = EventFilter.ForCategory(stream.Stream[..stream.Stream.IndexOf('-', StringComparison.Ordinal)]);
        return
        [
            await MedianRateAsync(() => Exactly(events, ReadAllAsync(0, null, events, cancellationToken))),
            await MedianRateAsync(() => ReadAllAsync(end, null, int.MaxValue, cancellationToken)),
            await MedianRateAsync(() => Exactly(events / 4, ReadAllAsync(middle, category, events / 4, cancellationToken))),
            await MedianRateAsync(() => Exactly(stream.Size, ReadStreamAsync(stream.Stream, ReadDirection.Forward, 1, cancellationToken))),
            await MedianRateAsync(() => Exactly(stream.Size, ReadStreamAsync(stream.Stream, ReadDirection.Backward, long.MaxValue, cancellationToken))),
        ];
    }

    private static async Task<int> Exactly(int expected, Task<int> read)
    {
        var count = await read;
        return count == expected ? count : throw new InvalidOperationException($"Read {count} events, expected {expected}.");
    }

    // The position of the last event appended when the store held at most `count` events (0 before the first).
    private long PositionAt(long count)
    {
        lock (_gate)
        {
            return _marks.Where(m => m.Count <= count).Select(m => m.Position).DefaultIfEmpty(0).Max();
        }
    }

    private async Task<int> ReadAllAsync(long from, EventFilter? filter, int max, CancellationToken cancellationToken)
    {
        var read = 0;
        await foreach (var e in Store.ReadAllAsync(from, filter, max, cancellationToken))
        {
            read += e.Envelope.Body.Length > 0 ? 1 : 0;
        }

        return read;
    }

    private async Task<int> ReadStreamAsync(string stream, ReadDirection direction, long from, CancellationToken cancellationToken)
    {
        var read = 0;
        await foreach (var e in Store.ReadStreamAsync(stream, direction, from, int.MaxValue, cancellationToken))
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
