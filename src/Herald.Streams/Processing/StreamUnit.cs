using Herald.EventSourcing;
using Herald.Reliability.DeadLetters;

namespace Herald.Streams;

/// <summary>
/// What a <see cref="StreamPartition"/> and a <see cref="StreamStage"/> have alike: a task run under a state name and a
/// checkpoint of its own, the position up to which it committed, the dead letters waiting for its next commit, the writer
/// of the records it sends to the next stage, and the loop that drives it.
/// </summary>
internal abstract class StreamUnit(string stateName, string checkpointId, StreamTask task, long committed)
{
    private long _committed = committed;

    /// <summary>The name its state is kept under in the <see cref="IStreamStateStore"/>.</summary>
    public string StateName { get; } = stateName;

    /// <summary>Its checkpoint in the <see cref="ICheckpointStore"/>.</summary>
    public string CheckpointId { get; } = checkpointId;

    public StreamTask Task { get; } = task;

    /// <summary>Everything it was given up to this position is committed (or had nothing to commit).</summary>
    public long Committed => Volatile.Read(ref _committed);

    /// <summary>Dead letters waiting for its next commit; guarded by the task's gate.</summary>
    public List<DeadLetter> DeadLetters { get; } = [];

    /// <summary>Writes the records leaving it to the repartition logs of the next stage (when there is one).</summary>
    public RepartitionWriter Writer { get; } = new();

    public System.Threading.Tasks.Task Loop { get; set; } = System.Threading.Tasks.Task.CompletedTask;

    /// <summary>
    /// The term this process took on its commits when it took the partition's lease (none without an election): a process
    /// that lost the lease but has not noticed yet cannot commit beside the one that took it over.
    /// </summary>
    public Herald.Internal.LeaderFence? Fence { get; init; }

    /// <summary>Moves <see cref="Committed"/> up to <paramref name="position"/>; never back.</summary>
    public void MarkCommitted(long position)
    {
        if (position > Volatile.Read(ref _committed))
        {
            Volatile.Write(ref _committed, position);
        }
    }
}
