using System.Collections.Concurrent;
using System.Globalization;
using System.Text.Json;
using System.Threading.Channels;
using Herald.Streams.Topology;

namespace Herald.Streams;

/// <summary>
/// One partition of a later sub-topology (stage ≥ 1) of a processor with several partitions: the task that runs the
/// operators after a re-key for the keys of its partition, fed from the repartition logs every partition of the stage
/// before writes. It shares the partition's lease; its state is <c>{name}:{partition}:stage-{stage}</c> and its checkpoint
/// (the source position up to which it took every record) <c>stream:{name}:{partition}:stage-{stage}</c>.
/// </summary>
internal sealed class StreamStage(int stage, StreamPartition partition, string stateName, string checkpointId, StreamTask task, long committed)
    : StreamUnit(stateName, checkpointId, task, committed)
{
    // A commit in this process wakes the stages at once; the poll finds the commits of other processes.
    private readonly Channel<bool> _wake = Channel.CreateBounded<bool>(new BoundedChannelOptions(1) { FullMode = BoundedChannelFullMode.DropWrite });

    public int Stage { get; } = stage;

    /// <summary>The partition whose keys (and lease) it runs.</summary>
    public StreamPartition Partition { get; } = partition;

    public int Index => Partition.Index;

    /// <summary>Cancelled when the run stops, once the stage before has committed: the loop takes what is there and ends.</summary>
    public CancellationTokenSource Stopping { get; } = new();

    public void Wake() => _wake.Writer.TryWrite(true);

    /// <summary>Waits until woken or until <paramref name="poll"/> has passed.</summary>
    public async ValueTask WaitAsync(TimeSpan poll, TimeProvider time, CancellationToken cancellationToken)
    {
        try
        {
            await _wake.Reader.WaitToReadAsync(cancellationToken).AsTask().WaitAsync(poll, time, cancellationToken).ConfigureAwait(false);
            _wake.Reader.TryRead(out _);
        }
        catch (TimeoutException)
        {
            // Polled: another process may have committed.
        }
    }
}

/// <summary>
/// Writes a task's crossing records into the repartition logs of the next stage, one log per (writing partition, reading
/// partition) kept in the <see cref="IStreamStateStore"/> under <c>{name}:repartition-{stage}:{from}-{to}</c>: each record
/// under its source position (so a reader can restore source order), and a mark (<c>mark</c>: the position and stream
/// time the writer committed up to). A log has one writer and one reader; the reader deletes what it took in its commit.
/// </summary>
internal sealed class RepartitionWriter
{
    internal const string Store = "$repartition";
    internal const string MarkKey = "mark";
    private long _lastPosition = -1;
    private int _next;

    /// <summary>The position of the last mark committed.</summary>
    public long MarkedAt { get; set; } = -1;

    public static string LogName(string processor, int stage, int from, int to) =>
        string.Create(CultureInfo.InvariantCulture, $"{processor}:repartition-{stage}:{from}-{to}");

    /// <summary>The changes of each log of <paramref name="stage"/>: the crossings of <paramref name="from"/> and its mark.</summary>
    public Dictionary<string, List<StateChange>> Changes(string processor, int stage, int from, int partitions, List<Crossing> crossings, long position, long streamTime)
    {
        var logs = new Dictionary<string, List<StateChange>>(StringComparer.Ordinal);
        for (var to = 0; to < partitions; to++)
        {
            logs[LogName(processor, stage, from, to)] = [];
        }

        foreach (var crossing in crossings)
        {
            // Records of one position keep the order they left in; a position seen again (a repeated barrier) goes on counting.
            if (crossing.Position != _lastPosition)
            {
                _lastPosition = crossing.Position;
                _next = 0;
            }

            var to = StreamPartitioner.PartitionOf(crossing.Record.Key, partitions);
            var key = string.Create(CultureInfo.InvariantCulture, $"{crossing.Position:D19}.{_next++:D6}");
            logs[LogName(processor, stage, from, to)].Add(new StateChange(Store, key, RepartitionRecord.Encode(crossing)));
        }

        var mark = JsonSerializer.Serialize(new RepartitionMark(position, streamTime), StateCodec.Json);
        foreach (var changes in logs.Values)
        {
            changes.Add(new StateChange(Store, MarkKey, mark));
        }

        return logs;
    }
}

/// <summary>How far a writer of a repartition log has committed: a source position and its stream time then.</summary>
internal sealed record RepartitionMark(long Position, long StreamTime);

/// <summary>
/// A record in a repartition log: the operator it goes to, its key and value as JSON with their runtime types (so
/// the next stage gets the objects the operator expects), its event time and the stream time and source position it
/// left at.
/// </summary>
internal sealed record RepartitionRecord(string Node, string? KeyType, string? Key, string? ValueType, string? Value, long Time, long StreamTime, long Position)
{
    private static readonly ConcurrentDictionary<string, Type> Types = new(StringComparer.Ordinal);

    public static string Encode(in Crossing crossing)
    {
        var (key, value) = (crossing.Record.Key, crossing.Record.Value);
        return JsonSerializer.Serialize(
            new RepartitionRecord(
                crossing.Node.Name,
                key?.GetType().AssemblyQualifiedName,
                key is null ? null : JsonSerializer.Serialize(key, key.GetType(), StateCodec.Json),
                value?.GetType().AssemblyQualifiedName,
                value is null ? null : JsonSerializer.Serialize(value, value.GetType(), StateCodec.Json),
                crossing.Record.Time,
                crossing.StreamTime,
                crossing.Position),
            StateCodec.Json);
    }

    public static RepartitionRecord Decode(string json) =>
        JsonSerializer.Deserialize<RepartitionRecord>(json, StateCodec.Json) ?? throw new JsonException("A repartition record read as JSON null.");

    public StreamRecord ToRecord() => new(Read(KeyType, Key), Read(ValueType, Value), Time);

    private static object? Read(string? type, string? json) =>
        type is null || json is null ? null : JsonSerializer.Deserialize(json, Types.GetOrAdd(type, static t => Type.GetType(t, throwOnError: true)!), StateCodec.Json);
}
