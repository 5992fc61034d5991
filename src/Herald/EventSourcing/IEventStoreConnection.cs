namespace Herald.EventSourcing;

/// <summary>
/// An event store a caller created without dependency injection (<c>SqliteEventStoreFactory.OpenAsync</c>,
/// <c>PostgresEventStoreFactory.CreateAsync</c>): the event, checkpoint and snapshot store in one, which the caller disposes.
/// </summary>
public interface IEventStoreConnection : IEventStore, ICheckpointStore, ISnapshotStore, IAsyncDisposable;
