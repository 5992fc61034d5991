namespace Herald.Internal;

/// <summary>How a <see cref="GroupCommitter{TItem}"/> queues and groups work. An extension point for adapter packages, not for application code.</summary>
public sealed class GroupCommitOptions
{
    /// <summary>Items that may wait; a caller beyond it waits for room (back-pressure).</summary>
    public int QueueCapacity { get; init; } = 4096;

    /// <summary>Writers that may commit groups side by side; the first idle one always takes the next group, so the others only join when groups overlap.</summary>
    public int Writers { get; init; } = 1;

    /// <summary>Items one group may hold.</summary>
    public int MaxItems { get; init; } = 256;

    /// <summary>Total <see cref="IGroupCommitItem.Weight"/> one group may hold; a heavier item still goes, alone.</summary>
    public long MaxWeight { get; init; } = long.MaxValue;

    /// <summary>Total <see cref="IGroupCommitItem.Bytes"/> one group may hold, beside the weight; a larger item still goes, alone.</summary>
    public long MaxBytes { get; init; } = long.MaxValue;

    /// <summary>How long a loop waits for more items before taking a group that is not full (zero: never waits).</summary>
    public TimeSpan GroupDelay { get; init; }

    /// <summary>
    /// How long a loop woken to fewer waiting items than the previous group held waits for the rest before taking a smaller
    /// group (zero: never waits). It polls the queue, yielding the processor between looks, so keep it well under a
    /// millisecond; for longer waits use <see cref="GroupDelay"/>. A lone caller never waits: its previous group held one item.
    /// </summary>
    public TimeSpan Linger { get; init; }

    /// <summary>The clock of <see cref="GroupDelay"/>.</summary>
    public TimeProvider TimeProvider { get; init; } = TimeProvider.System;

    /// <summary>The name in the <see cref="ObjectDisposedException"/> a caller gets once the committer stopped taking work.</summary>
    public string OwnerName { get; init; } = "GroupCommitter";

    /// <summary>The message of that exception.</summary>
    public string DisposedMessage { get; init; } = "The committer was disposed; the work was not done.";
}
