namespace Herald.Streams.Topology;

/// <summary>The state of one time window of one key: its end, its aggregate, and whether it has closed.</summary>
internal sealed record WindowSlot<TAggregate>(long End, TAggregate Value, bool Closed) : IWindowSlot
{
    object? IWindowSlot.Value => Value;
}

/// <summary>What queries read of a window or session, whatever its aggregate type.</summary>
internal interface IWindowSlot
{
    long End { get; }

    object? Value { get; }
}

/// <summary>A session also has its own start (a time window's start is in its state key).</summary>
internal interface ISessionSlot : IWindowSlot
{
    long Start { get; }
}

/// <summary>The sessions of one key, in start order.</summary>
internal sealed record SessionSlot<TAggregate>(long Start, long End, TAggregate Value, bool Closed) : ISessionSlot
{
    object? IWindowSlot.Value => Value;
}

/// <summary>Shared parts of the windowed aggregates: the late side output and emit mode.</summary>
internal abstract class WindowedNode(string name, WindowDefinition? windows, bool suppress, long retention) : Node(name)
{
    public PassNode? LateOutput { get; set; }

    protected WindowDefinition? Windows => windows;

    public bool Suppress => suppress;

    public long Retention => retention;

    public long Grace => windows?.Grace.Ticks ?? 0;

    public override bool IsTimed => true;

    public override string? Problem() => windows is null
        ? "it has no window definition"
        : windows.Problem() is { } problem ? problem : retention < 0 ? "its retention is negative" : null;

    protected void Late(in StreamRecord record, StreamTask task)
    {
        if (LateOutput is { } late)
        {
            late.Process(record, task);
        }
        else
        {
            task.ReportLate(this, record);
        }
    }
}

/// <summary>Aggregates per key and tumbling or hopping window (aligned to the Unix epoch).</summary>
internal sealed class TimeWindowAggregateNode<TKey, TValue, TAggregate>(
    string name,
    string store,
    WindowDefinition? windows,
    Func<TAggregate> initializer,
    Func<TKey, TValue, TAggregate, TAggregate> aggregator,
    bool suppress,
    long retention)
    : WindowedNode(name, windows, suppress, retention)
{
    private static readonly long Epoch = DateTimeOffset.UnixEpoch.UtcTicks;
    private readonly long _size = windows switch { TumblingWindows t => t.Size.Ticks, HoppingWindows h => h.Size.Ticks, _ => 0 };
    private readonly long _advance = windows switch { TumblingWindows t => t.Size.Ticks, HoppingWindows h => h.Advance.Ticks, _ => 0 };

    public override IEnumerable<StoreSpec> Stores => [new(store, StateCodec.For<WindowSlot<TAggregate>>(), Name)];

    public override string? Problem() => base.Problem() ?? (Windows is SessionWindows ? "session windows need a session aggregate" : null);

    public override void Process(in StreamRecord record, StreamTask task)
    {
        var key = (TKey)record.Key!;
        var value = (TValue)record.Value!;
        var state = task.Store(store);
        var index = Index(state);
        var keyJson = StateCodec.Key(key, Name);
        var watermark = task.Watermark;
        var time = record.Time;
        var missed = false;
        var lastStart = time - Mod(time - Epoch, _advance);
        for (var start = lastStart; start > time - _size; start -= _advance)
        {
            var end = start + _size;
            var close = EventTime.Plus(end, Grace);
            var stateKey = StateCodec.WindowKey(keyJson, start);
            var created = !state.TryGet(stateKey, out var existing);
            var slot = created ? new WindowSlot<TAggregate>(end, initializer(), false) : (WindowSlot<TAggregate>)existing!;
            if (slot.Closed || close <= watermark)
            {
                missed = true;
                continue;
            }

            task.Current = this;
            slot = slot with { Value = aggregator(key, value, slot.Value) };
            state.Put(stateKey, slot);
            if (created)
            {
                // Only once the slot exists: an aggregator that threw first would leave an entry the next record repeats,
                // and the window would close at one and be deleted at the other, losing its retention.
                index.Enqueue(stateKey, close);
            }
            if (!Suppress)
            {
                Forward(new StreamRecord(new Windowed<TKey>(key, EventTime.Window(start, end)), slot.Value, time), task);
            }
        }

        if (missed)
        {
            Late(record, task);
        }
    }

    public override void OnWatermark(StreamTask task)
    {
        var state = task.Store(store);
        var index = Index(state);
        var watermark = task.Watermark;
        while (state.TryTakeDue(watermark, inclusive: true, out var stateKey, out var existing))
        {
            var slot = (WindowSlot<TAggregate>)existing;
            if (slot.Closed)
            {
                state.Delete(stateKey);
                continue;
            }

            if (Suppress)
            {
                var (keyJson, start) = StateCodec.SplitWindowKey(stateKey);
                task.RunTimed(this, new StreamRecord(new Windowed<TKey>(StateCodec.DecodeKey<TKey>(keyJson), EventTime.Window(start, slot.End)), slot.Value, slot.End), r => Forward(r, task));
            }

            if (Retention == 0)
            {
                state.Delete(stateKey);
            }
            else
            {
                state.Put(stateKey, slot with { Closed = true });
                index.Enqueue(stateKey, EventTime.Plus(slot.End, Grace, Retention));
            }
        }
    }

    private static long Mod(long value, long divisor) => ((value % divisor) + divisor) % divisor;

    private PriorityQueue<string, long> Index(StateStore state) => state.DueIndex(index =>
    {
        foreach (var (stateKey, value) in state.Entries)
        {
            var slot = (WindowSlot<TAggregate>)value;
            index.Enqueue(stateKey, EventTime.Plus(slot.End, Grace, slot.Closed ? Retention : 0));
        }
    });
}

/// <summary>
/// Aggregates per key and session: an event within the gap of a session extends it, and one that bridges two sessions
/// merges them (their aggregates combined with the merger). An event is late when its time + grace is below the
/// watermark; a session closes when its end + gap + grace is, so no event that is on time can reach a closed session.
/// </summary>
internal sealed class SessionAggregateNode<TKey, TValue, TAggregate>(
    string name,
    string store,
    SessionWindows? windows,
    Func<TAggregate> initializer,
    Func<TKey, TValue, TAggregate, TAggregate> aggregator,
    Func<TKey, TAggregate, TAggregate, TAggregate> merger,
    bool suppress,
    long retention)
    : WindowedNode(name, windows, suppress, retention)
{
    private readonly long _gap = windows?.Gap.Ticks ?? 0;

    public override IEnumerable<StoreSpec> Stores => [new(store, StateCodec.For<SessionSlot<TAggregate>[]>(), Name)];

    public override void Process(in StreamRecord record, StreamTask task)
    {
        var key = (TKey)record.Key!;
        var time = record.Time;
        var watermark = task.Watermark;
        if (EventTime.Plus(time, Grace) < watermark)
        {
            Late(record, task);
            return;
        }

        var state = task.Store(store);
        var index = Index(state);
        var keyJson = StateCodec.Key(key, Name);
        var sessions = state.TryGet(keyJson, out var existing) ? (SessionSlot<TAggregate>[])existing! : [];
        var kept = new List<SessionSlot<TAggregate>>(sessions.Length + 1);
        long start = time, end = time;
        var merged = false;
        TAggregate aggregate = default!;
        task.Current = this;
        foreach (var session in sessions)
        {
            if (!session.Closed && session.Start <= EventTime.Plus(time, _gap) && time <= EventTime.Plus(session.End, _gap))
            {
                start = Math.Min(start, session.Start);
                end = Math.Max(end, session.End);
                aggregate = merged ? merger(key, aggregate, session.Value) : session.Value;
                merged = true;
            }
            else
            {
                kept.Add(session);
            }
        }

        aggregate = aggregator(key, (TValue)record.Value!, merged ? aggregate : initializer());
        kept.Add(new SessionSlot<TAggregate>(start, end, aggregate, false));
        kept.Sort((a, b) => a.Start.CompareTo(b.Start));
        state.Put(keyJson, kept.ToArray());
        index.Enqueue(keyJson, EventTime.Plus(end, _gap, Grace));
        if (!Suppress)
        {
            Forward(new StreamRecord(new Windowed<TKey>(key, EventTime.Window(start, end)), aggregate, time), task);
        }
    }

    public override void OnWatermark(StreamTask task)
    {
        var state = task.Store(store);
        var index = Index(state);
        var watermark = task.Watermark;
        while (state.TryTakeDue(watermark, inclusive: false, out var keyJson, out var existing))
        {
            var sessions = (SessionSlot<TAggregate>[])existing;
            var kept = new List<SessionSlot<TAggregate>>(sessions.Length);
            var changed = false;
            foreach (var session in sessions)
            {
                var close = EventTime.Plus(session.End, _gap, Grace);
                if (session.Closed)
                {
                    if (EventTime.Plus(close, Retention) < watermark)
                    {
                        changed = true;
                        continue;
                    }
                }
                else if (close < watermark)
                {
                    changed = true;
                    if (Suppress)
                    {
                        var key = StateCodec.DecodeKey<TKey>(keyJson);
                        task.RunTimed(this, new StreamRecord(new Windowed<TKey>(key, EventTime.Window(session.Start, session.End)), session.Value, session.End), r => Forward(r, task));
                    }

                    if (Retention == 0)
                    {
                        continue;
                    }

                    kept.Add(session with { Closed = true });
                    index.Enqueue(keyJson, EventTime.Plus(close, Retention));
                    continue;
                }

                kept.Add(session);
            }

            if (changed)
            {
                state.PutOrDelete(keyJson, kept);
            }
        }
    }

    private PriorityQueue<string, long> Index(StateStore state) => state.DueIndex(index =>
    {
        foreach (var (keyJson, value) in state.Entries)
        {
            foreach (var session in (SessionSlot<TAggregate>[])value)
            {
                index.Enqueue(keyJson, EventTime.Plus(session.End, _gap, Grace, session.Closed ? Retention : 0));
            }
        }
    });
}
