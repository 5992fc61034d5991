namespace Herald.Internal;

/// <summary>
/// The engine's part of a <see cref="GroupCommitter{TItem}"/>: runs a group as one commit (the SQL, the savepoints, the
/// retries) and completes each item with its own result or exception. One writer serves one loop of the committer, so it
/// may keep state across groups (a connection); it is disposed when its loop ends. An extension point for adapter packages,
/// not for application code.
/// </summary>
/// <typeparam name="TItem">The queued work.</typeparam>
public interface IGroupCommitWriter<TItem> : IAsyncDisposable
    where TItem : class, IGroupCommitItem
{
    /// <summary>
    /// Commits <see cref="GroupCommitBatch{TItem}.Items"/> and completes every one of them. It may go on with the groups
    /// queued meanwhile through <see cref="GroupCommitBatch{TItem}.TryTakeNext"/> (to keep a lock it holds). An exception
    /// that escapes fails the items of the group at hand that have no outcome yet.
    /// </summary>
    ValueTask CommitAsync(GroupCommitBatch<TItem> batch);
}
