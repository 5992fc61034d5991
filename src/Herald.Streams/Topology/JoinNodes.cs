namespace Herald.Streams.Topology;

/// <summary>A record waiting in a join buffer for partners: its event time, its value, and whether it found one.</summary>
internal sealed record Buffered<T>(long Time, T Value, bool Matched);

/// <summary>How a stream-stream join treats a record that found no partner by the time its window closed.</summary>
internal enum JoinKind
{
    Inner,
    Left,
    Outer,
}

/// <summary>
/// A windowed stream-stream join: each side buffers its records per key until the watermark passes their time + window +
/// grace; a record joins every buffered record of the other side within the window. An unmatched record is emitted with
/// a default partner when its window closes (left: left records; outer: both sides). A record whose time + grace is below
/// the watermark is late, so every partner of an on-time record is still buffered.
/// </summary>
internal sealed class StreamJoinNode<TKey, TLeft, TRight, TResult> : Node
{
    private readonly JoinWindows? _window;
    private readonly Func<TLeft?, TRight?, TResult> _joiner;
    private readonly JoinKind _kind;
    private readonly string _leftStore;
    private readonly string _rightStore;

    public StreamJoinNode(string name, JoinWindows? window, Func<TLeft?, TRight?, TResult> joiner, JoinKind kind)
        : base(name)
    {
        _window = window;
        _joiner = joiner;
        _kind = kind;
        _leftStore = name + "-left";
        _rightStore = name + "-right";
        Left = new SideNode(name + "/left", this, isLeft: true);
        Right = new SideNode(name + "/right", this, isLeft: false);
    }

    public Node Left { get; }

    public Node Right { get; }

    public override bool IsTimed => true;

    public override IEnumerable<StoreSpec> Stores =>
    [
        new(_leftStore, StateCodec.For<Buffered<TLeft>[]>(), Name),
        new(_rightStore, StateCodec.For<Buffered<TRight>[]>(), Name),
    ];

    private long Within => _window!.Within.Ticks;

    private long Grace => _window!.Grace.Ticks;

    public override string? Problem() => _window is null ? "it has no join window (a stream-stream join needs JoinWindows)" : _window.Problem();

    public override void Process(in StreamRecord record, StreamTask task) =>
        throw new InvalidOperationException($"'{Name}' takes records through its sides only.");

    public override void OnWatermark(StreamTask task)
    {
        Expire<TLeft>(task, _leftStore, value => _joiner(value, default), emit: _kind != JoinKind.Inner);
        Expire<TRight>(task, _rightStore, value => _joiner(default, value), emit: _kind == JoinKind.Outer);
    }

    private void Arrive<TThis, TOther>(in StreamRecord record, StreamTask task, string thisStore, string otherStore, Func<TThis, TOther, TResult> join)
    {
        var time = record.Time;
        if (EventTime.Plus(time, Grace) < task.Watermark)
        {
            task.ReportLate(this, record);
            return;
        }

        var keyJson = StateCodec.Key((TKey)record.Key!, Name);
        var value = (TThis)record.Value!;
        var matched = false;
        var others = task.Store(otherStore);
        if (others.TryGet(keyJson, out var buffered))
        {
            var partners = (Buffered<TOther>[])buffered!;
            Buffered<TOther>[]? updated = null;
            for (var i = 0; i < partners.Length; i++)
            {
                var partner = partners[i];
                if (Math.Abs(partner.Time - time) > Within)
                {
                    continue;
                }

                matched = true;
                task.Current = this;
                Forward(new StreamRecord(record.Key, join(value, partner.Value), Math.Max(time, partner.Time)), task);
                if (!partner.Matched)
                {
                    updated ??= (Buffered<TOther>[])partners.Clone();
                    updated[i] = partner with { Matched = true };
                }
            }

            if (updated is not null)
            {
                others.Put(keyJson, updated);
            }
        }

        var mine = task.Store(thisStore);

        // Built from the entries after a restart before this record is stored, so it is listed once.
        var index = Index(mine);
        var list = mine.TryGet(keyJson, out var existing) ? (Buffered<TThis>[])existing! : [];
        Buffered<TThis>[] next = [.. list, new Buffered<TThis>(time, value, matched)];
        mine.Put(keyJson, next);
        index.Enqueue(keyJson, EventTime.Plus(time, Within, Grace));
    }

    private void Expire<T>(StreamTask task, string storeName, Func<T, TResult> unmatched, bool emit)
    {
        var state = task.Store(storeName);
        _ = Index(state); // built from the entries after a restart, before anything is taken from it
        var watermark = task.Watermark;
        while (state.TryTakeDue(watermark, inclusive: false, out var keyJson, out var existing))
        {
            var list = (Buffered<T>[])existing;
            var kept = new List<Buffered<T>>(list.Length);
            foreach (var item in list)
            {
                if (EventTime.Plus(item.Time, Within, Grace) >= watermark)
                {
                    kept.Add(item);
                    continue;
                }

                if (emit && !item.Matched)
                {
                    task.RunTimed(this, new StreamRecord(StateCodec.DecodeKey<TKey>(keyJson), item.Value, EventTime.Plus(item.Time, Within)), r => Forward(r with { Value = unmatched((T)r.Value!) }, task));
                }
            }

            if (kept.Count != list.Length)
            {
                state.PutOrDelete(keyJson, kept);
            }
        }
    }

    private PriorityQueue<string, long> Index(StateStore state) => state.DueIndex(index =>
    {
        foreach (var (keyJson, value) in state.Entries)
        {
            // The element type differs per side; only the times matter here.
            foreach (var time in value is Buffered<TLeft>[] left ? left.Select(b => b.Time) : ((Buffered<TRight>[])value).Select(b => b.Time))
            {
                index.Enqueue(keyJson, EventTime.Plus(time, Within, Grace));
            }
        }
    });

    /// <summary>One input side of the join.</summary>
    private sealed class SideNode(string name, StreamJoinNode<TKey, TLeft, TRight, TResult> join, bool isLeft) : Node(name), ISharedStateNode
    {
        // It writes the join's buffers.
        public override bool RunsInPartition => true;

        public IEnumerable<string> ReadsStores => [join._leftStore, join._rightStore];

        public override void Process(in StreamRecord record, StreamTask task)
        {
            if (isLeft)
            {
                join.Arrive<TLeft, TRight>(record, task, join._leftStore, join._rightStore, (l, r) => join._joiner(l, r));
            }
            else
            {
                join.Arrive<TRight, TLeft>(record, task, join._rightStore, join._leftStore, (r, l) => join._joiner(l, r));
            }
        }
    }
}
