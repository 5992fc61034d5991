using System.Globalization;
using Herald.Streams.Topology;

namespace Herald.Streams;

/// <summary>
/// Runs a built topology over one sequence of records: it keeps the stream time (the largest event time seen), the
/// watermark (stream time − allowed out-of-orderness), the state of every operator, and the outputs waiting for the next
/// commit. Not thread-safe: one task is driven by one loop at a time; <see cref="Gate"/> guards queries against it.
/// </summary>
internal sealed class StreamTask
{
    internal const string TaskStore = "$task";
    private const string StreamTimeKey = "stream-time";
    private readonly Dictionary<string, StateStore> _stores = new(StringComparer.Ordinal);
    private readonly List<PendingOutput> _outputs = [];
    private readonly List<TimerFailure> _timerFailures = [];
    private List<LateRecord>? _late;
    private readonly long _outOfOrder;
    private long _streamTime = long.MinValue;
    private long _savedStreamTime = long.MinValue;
    private long _lastWatermarkRun = long.MinValue;

    public StreamTask(StreamTopology topology, TimeSpan allowedOutOfOrderness)
    {
        Topology = topology;
        _outOfOrder = allowedOutOfOrderness.Ticks;
        foreach (var spec in topology.Stores)
        {
            _stores.Add(spec.Name, new StateStore(spec));
        }

        _stores.Add(TaskStore, new StateStore(new StoreSpec(TaskStore, new StateCodec(v => ((long)v).ToString(CultureInfo.InvariantCulture), s => long.Parse(s, CultureInfo.InvariantCulture)), "task")));
    }

    public StreamTopology Topology { get; }

    /// <summary>
    /// Set on the task that reads the source of a partitioned processor: it runs only the stateless operators and hands
    /// each record bound for an operator with state to the router, which sends it to the task of its key's partition.
    /// </summary>
    public IRecordRouter? Router { get; init; }

    /// <summary>The application's services, for operators that read outside the stream (a read-model lookup).</summary>
    public IServiceProvider? Services { get; init; }

    public Lock Gate { get; } = new();

    /// <summary>The sub-topology this task runs (<see cref="Node.Stage"/>).</summary>
    public int Stage { get; init; }

    /// <summary>
    /// Set on the partition tasks of a processor with several partitions and sub-topologies: the records leaving this
    /// task's sub-topology, for the repartition log of the next commit. Null: every operator runs in this task.
    /// </summary>
    public List<Crossing>? Crossings { get; init; }

    /// <summary>The source position of the record in hand (or of the commit barrier), which crossing records keep.</summary>
    public long Position { get; set; }

    /// <summary>The largest event time seen (UTC ticks), or <see cref="long.MinValue"/> before the first record.</summary>
    public long StreamTime => _streamTime;

    /// <summary>Stream time minus the allowed out-of-orderness: no record older than it is expected any more.</summary>
    public long Watermark => _streamTime == long.MinValue ? long.MinValue : _streamTime - _outOfOrder;

    /// <summary>Late records without a side output of their operator (<see cref="TakeLate"/>).</summary>
    public long LateCount { get; private set; }

    public IReadOnlyDictionary<string, StateStore> Stores => _stores;

    public StateStore Store(string name) => _stores[name];

    /// <summary>The current operator, named in the reason when a user function throws.</summary>
    internal Node? Current { get; set; }

    /// <summary>Loads a value read from the durable state store at start.</summary>
    public void Load(string store, string key, string json)
    {
        if (!_stores.TryGetValue(store, out var state))
        {
            return; // A store the topology no longer has; its rows are left alone.
        }

        state.Load(key, json);
        if (store == TaskStore && key == StreamTimeKey && state.TryGet(key, out var time))
        {
            _streamTime = _savedStreamTime = (long)time!;
            _lastWatermarkRun = Watermark;
        }
    }

    /// <summary>
    /// Feeds one input message of a source type through the topology and then lets timed operators react to the watermark.
    /// Returns false when no source of the topology takes the message's type. Exceptions from user functions propagate.
    /// </summary>
    public bool Process(object message, string key, DateTimeOffset time)
    {
        if (!Topology.Sources.TryGetValue(message.GetType(), out var sources))
        {
            return false;
        }

        var record = new StreamRecord(key, message, time.UtcTicks);
        foreach (var source in sources)
        {
            source.Process(record, this);
        }

        if (Router is null)
        {
            AdvanceTimers();
        }

        return true;
    }

    /// <summary>
    /// Runs a record the router sent to this partition from <paramref name="node"/> on, with the stream time the router
    /// had when it sent it (so a partition judges lateness as one task over the whole source would), then the timers.
    /// </summary>
    public void ProcessRouted(Node node, in StreamRecord record, long streamTime)
    {
        Observe(streamTime);
        var outputs = _outputs.Count;
        var crossings = Crossings?.Count ?? 0;
        var late = _late?.Count ?? 0;
        var lateCount = LateCount;
        foreach (var store in _stores.Values)
        {
            store.Journal();
        }

        try
        {
            if (Crossings is not null && node.Stage > Stage)
            {
                Cross(node, record);
            }
            else
            {
                node.Process(record, this);
            }
        }
        catch
        {
            // The record is dead-lettered as a whole: what it changed before the failure (a first window of two, a first
            // output) must not commit, or a replay of the dead letter would count it twice.
            _outputs.RemoveRange(outputs, _outputs.Count - outputs);
            Crossings?.RemoveRange(crossings, Crossings.Count - crossings);
            _late?.RemoveRange(late, _late.Count - late);
            LateCount = lateCount;
            foreach (var store in _stores.Values)
            {
                store.Undo();
            }

            throw;
        }

        foreach (var store in _stores.Values)
        {
            store.Accept();
        }

        AdvanceTimers();
    }

    /// <summary>Keeps a record bound for a later sub-topology, with the stream time and position it leaves at.</summary>
    public void Cross(Node node, in StreamRecord record) => Crossings!.Add(new Crossing(node, record, _streamTime, Position));

    /// <summary>The records that left the sub-topology since the last call, in the order they left.</summary>
    public List<Crossing> TakeCrossings()
    {
        if (Crossings is not { Count: > 0 } crossing)
        {
            return [];
        }

        var taken = new List<Crossing>(crossing);
        crossing.Clear();
        return taken;
    }

    /// <summary>Moves the stream time to the router's (never back) and lets timed operators react, without a record.</summary>
    public void Tick(long streamTime)
    {
        Observe(streamTime);
        AdvanceTimers();
    }

    /// <summary>Called by sources with each record's event time.</summary>
    public void Observe(long time)
    {
        if (time > _streamTime)
        {
            _streamTime = time;
        }
    }

    public void Emit(SinkNode sink, in StreamRecord record) => _outputs.Add(new PendingOutput(sink, record));

    /// <summary>
    /// Keeps a late record whose operator has no side output until the commit of what refused it: the processor's late
    /// handler then sees it once, not again each time a rolled-back or failed commit makes the event run anew.
    /// </summary>
    public void ReportLate(Node node, in StreamRecord record)
    {
        LateCount++;
        (_late ??= []).Add(new LateRecord(node.Name, record.Key, record.Value, new DateTimeOffset(record.Time, TimeSpan.Zero), new DateTimeOffset(Watermark, TimeSpan.Zero)));
    }

    /// <summary>The late records reported since the last call, for the processor's late handler once they commit; null when none.</summary>
    public List<LateRecord>? TakeLate()
    {
        var late = _late;
        _late = null;
        return late;
    }

    /// <summary>
    /// Runs what a timed operator emits as the watermark moves (a closed window, an unmatched join record). A user function
    /// that throws there belongs to no input event, and the timer must still finish closing what is due (its index entry is
    /// taken already), so the failure is kept for the processor to dead-letter with the next commit instead of escaping.
    /// </summary>
    public void RunTimed(Node timer, in StreamRecord record, Action<StreamRecord> emit)
    {
        try
        {
            Current = timer;
            emit(record);
        }
        catch (Exception ex) when (ex is not OperationCanceledException and not StreamLookupException)
        {
            _timerFailures.Add(new TimerFailure(StreamKeyException.Operator(ex, Current?.Name ?? timer.Name), timer.Name, record.Key, record.Value, record.Time, Position, ex));
        }
    }

    /// <summary>The failures of timed emissions since the last call.</summary>
    public List<TimerFailure> TakeTimerFailures()
    {
        var failures = new List<TimerFailure>(_timerFailures);
        _timerFailures.Clear();
        return failures;
    }

    /// <summary>The outputs produced since the last call, in the order they were produced.</summary>
    public List<PendingOutput> TakeOutputs()
    {
        var outputs = new List<PendingOutput>(_outputs);
        _outputs.Clear();
        return outputs;
    }

    /// <summary>Every state change since the last call, the stream time included.</summary>
    public List<StateChange> TakeChanges()
    {
        if (_streamTime != _savedStreamTime)
        {
            _stores[TaskStore].Put(StreamTimeKey, _streamTime);
            _savedStreamTime = _streamTime;
        }

        var changes = new List<StateChange>();
        foreach (var store in _stores.Values)
        {
            changes.AddRange(store.TakeChanges());
        }

        return changes;
    }

    private void AdvanceTimers()
    {
        var watermark = Watermark;
        if (watermark <= _lastWatermarkRun)
        {
            return;
        }

        _lastWatermarkRun = watermark;
        foreach (var node in Topology.TimedNodes)
        {
            node.OnWatermark(this);
        }
    }
}

/// <summary>A record leaving a sub-topology for <see cref="Node"/>, with the stream time and source position it left at.</summary>
internal readonly record struct Crossing(Node Node, StreamRecord Record, long StreamTime, long Position);

/// <summary>A user function that threw on what a timed operator emitted: where it threw, the timer, the record, and the position then.</summary>
internal sealed record TimerFailure(string Operator, string Timer, object? Key, object? Value, long Time, long Position, Exception Error);

/// <summary>An output waiting for the next commit to reach its sink.</summary>
internal readonly record struct PendingOutput(SinkNode Sink, StreamRecord Record);

/// <summary>One changed entry of a state store: its JSON, or null when it was deleted.</summary>
/// <param name="Store">The store's name.</param>
/// <param name="Key">The entry's key.</param>
/// <param name="Value">The entry's JSON, or null for a deletion.</param>
public sealed record StateChange(string Store, string Key, string? Value);

/// <summary>A record that came after its window closed, as the side output or the processor's late handler sees it.</summary>
/// <param name="Operator">The operator that refused it.</param>
/// <param name="Key">Its key.</param>
/// <param name="Value">Its value.</param>
/// <param name="EventTime">Its event time.</param>
/// <param name="Watermark">The watermark when it came.</param>
public sealed record LateRecord(string Operator, object? Key, object? Value, DateTimeOffset EventTime, DateTimeOffset Watermark);
