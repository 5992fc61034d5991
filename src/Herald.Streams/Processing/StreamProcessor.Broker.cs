using Herald.Internal;
using Herald.Streams.Topology;

namespace Herald.Streams;

public sealed partial class StreamProcessor
{
    // The broker partitions (by number) this process holds for a transport source on a key-partitioned broker (Kafka).
    private readonly Lock _brokerGate = new();
    private readonly Dictionary<int, BrokerSlot> _brokerSlots = [];
    private readonly HashSet<int> _brokerTouched = [];

    // Set at the first assignment, and kept: a process holding no broker partition answers for none (not for "{name}").
    private volatile bool _followsBroker;

    /// <summary>True once a key-partitioned broker (Kafka) assigned partitions to this transport source: state then follows them.</summary>
    private bool FollowsBroker => _followsBroker;

    private string BrokerStateName(int partition) => $"{Name}:b{partition}";

    /// <summary>
    /// The consumer of <paramref name="queue"/> was given <paramref name="partitions"/>: partition numbers held through a
    /// topic other than the queue's own start loading their committed state now (the first message waits for it).
    /// </summary>
    internal void OnBrokerAssigned(string queue, IReadOnlyList<BrokerPartition> partitions)
    {
        lock (_brokerGate)
        {
            _followsBroker = true;
            foreach (var partition in partitions.Where(p => p.Topic != queue))
            {
                if (!_brokerSlots.TryGetValue(partition.Partition, out var slot))
                {
                    slot = new BrokerSlot();
                    _brokerSlots.Add(partition.Partition, slot);
                }

                slot.Held[(queue, partition.Topic)] = partition.Assignment;
                slot.Load ??= LoadBrokerAsync(partition.Partition);
            }
        }
    }

    /// <summary>
    /// The consumer of <paramref name="queue"/> gave <paramref name="partitions"/> up (their handlers are done): a number no
    /// longer held through any topic leaves the memory, and is loaded from the store again if it comes back.
    /// </summary>
    internal void OnBrokerRevoked(string queue, IReadOnlyList<BrokerPartition> partitions)
    {
        lock (_brokerGate)
        {
            foreach (var partition in partitions)
            {
                if (_brokerSlots.TryGetValue(partition.Partition, out var slot)
                    && slot.Held.TryGetValue((queue, partition.Topic), out var assignment) && assignment == partition.Assignment)
                {
                    slot.Held.Remove((queue, partition.Topic));
                    if (slot.Held.Count == 0)
                    {
                        _brokerSlots.Remove(partition.Partition);
                        Log.BrokerPartitionDropped(_logger, Name, partition.Partition);
                    }
                }
            }
        }
    }

    /// <summary>
    /// The run of the broker partition a message came from: loaded from the committed state when this process was given the
    /// partition (and again after a rolled-back unit of work touched it). A message of a partition this process does not
    /// hold (anymore) is refused: its partition's owner handles it.
    /// </summary>
    private async ValueTask<StreamRun> BrokerRunAsync(BrokerPartition from, string queue, CancellationToken cancellationToken)
    {
        await _started.Task.WaitAsync(cancellationToken).ConfigureAwait(false);
        Task<StreamRun> load;
        lock (_brokerGate)
        {
            if (!_brokerSlots.TryGetValue(from.Partition, out var slot)
                || (from.Topic != queue && (!slot.Held.TryGetValue((queue, from.Topic), out var assignment) || assignment != from.Assignment)))
            {
                throw new StreamPartitionNotOwnedException(
                    $"Stream processor '{Name}' does not hold broker partition {from.Partition} (topic '{from.Topic}') now; the process that holds it handles the message.");
            }

            if (slot.Load is not { IsFaulted: false, IsCanceled: false } current)
            {
                current = slot.Load = LoadBrokerAsync(from.Partition);
            }

            load = current;
            _brokerTouched.Add(from.Partition);
        }

        return await load.WaitAsync(cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Forgets the memory of the broker partitions a rolled-back unit of work changed: the next message reloads them.</summary>
    private void LeaveBroker(bool realign)
    {
        lock (_brokerGate)
        {
            if (realign)
            {
                foreach (var partition in _brokerTouched)
                {
                    if (_brokerSlots.TryGetValue(partition, out var slot))
                    {
                        slot.Load = null;
                    }
                }
            }

            _brokerTouched.Clear();
        }
    }

    private Task<StreamRun> LoadBrokerAsync(int brokerPartition) => Task.Run(async () =>
    {
        var stateName = BrokerStateName(brokerPartition);
        var (task, entries) = await LoadTaskAsync(stateName, CancellationToken.None).ConfigureAwait(false);
        // The run's one partition (index 0: every key of the broker partition routes to it).
        var partition = new StreamPartition(0, stateName, "stream:" + stateName, task, 0);
        var run = new StreamRun(_topology, _options.AllowedOutOfOrderness, _services, 1, [partition]);

        // Stream time is the partition's own: the order of one broker partition is fixed, so its windows close the same
        // whichever process reads it, and however the partitions are spread.
        run.Router.Observe(task.StreamTime);
        Log.BrokerPartitionLoaded(_logger, Name, brokerPartition, entries);
        return run;
    });

    /// <summary>The loaded runs of the broker partitions this process holds, by number.</summary>
    private List<(int Partition, StreamRun Run)> BrokerRuns()
    {
        lock (_brokerGate)
        {
            return [.. _brokerSlots
                .Where(s => s.Value.Load is { IsCompletedSuccessfully: true })
                .Select(s => (s.Key, s.Value.Load!.Result))
                .OrderBy(s => s.Key)];
        }
    }

    /// <summary>With broker partitions, a record reaches state under the key it came with, or that key's state would be split over processes.</summary>
    private static void CheckBrokerKey(StreamRun run, string key)
    {
        // A sink keeps nothing: what reaches it may have any key.
        foreach (var (_, node, record) in run.Routed.Where(r => r.Node is not SinkNode))
        {
            var routed = record.Key is IWindowedKey windowed ? windowed.GroupKey : record.Key;
            if (routed is not string same || same != key)
            {
                throw new StreamKeyException(
                    $"'{node.Name}' gets a record keyed {StateCodec.KeyOrNull(routed ?? "null") ?? "(with half of a surrogate pair)"}, but it came from a broker partition by the partition key '{key}': " +
                    "a transport source on a key-partitioned broker keeps state by broker partition, so a record may not change its key before state. " +
                    "Publish with the key you group by (DeliveryOptions.PartitionKey).",
                    node.Name);
            }
        }
    }

    /// <summary>One broker partition number this process holds: through which (queue, topic) assignments, and its state.</summary>
    private sealed class BrokerSlot
    {
        public Dictionary<(string Queue, string Topic), long> Held { get; } = [];

        public Task<StreamRun>? Load { get; set; }
    }
}

/// <summary>A message came from a broker partition this process does not hold (anymore); the process that holds it handles it.</summary>
internal sealed class StreamPartitionNotOwnedException : HeraldException
{
    /// <summary>Creates the exception with the reason.</summary>
    public StreamPartitionNotOwnedException(string message)
        : base(message)
    {
    }
}
