namespace Herald.EventSourcing.Aggregates;

/// <summary>
/// Base class of event-sourced aggregates: state changes only by events, applied in <see cref="When"/>. New events are
/// raised with <see cref="Raise"/> and kept as uncommitted until an <see cref="AggregateRepository{TAggregate}"/> saves them.
/// </summary>
public abstract class Aggregate
{
    private readonly List<object> _uncommitted = [];

    /// <summary>The aggregate's id; its stream is <c>{category}-{id}</c>. Set by the repository on load, or by the aggregate itself when created.</summary>
    public string Id { get; protected internal set; } = string.Empty;

    /// <summary>The stream version the state includes (0 for a new aggregate); the expected version of the next save.</summary>
    public long Version { get; private set; }

    /// <summary>Events raised since the aggregate was loaded or last saved, oldest first.</summary>
    public IReadOnlyList<object> UncommittedEvents => _uncommitted;

    /// <summary>The CLR type of the snapshot state, or null (the default) when the aggregate is never snapshotted.</summary>
    protected internal virtual Type? SnapshotType => null;

    /// <summary>Forgets the uncommitted events (the repository calls it after a successful save).</summary>
    public void ClearUncommittedEvents() => _uncommitted.Clear();

    /// <summary>Returns the current state as a serializable object of <see cref="SnapshotType"/>.</summary>
    protected internal virtual object CreateSnapshot() =>
        throw new NotSupportedException($"{GetType().Name} does not take snapshots; override SnapshotType, CreateSnapshot and RestoreSnapshot.");

    /// <summary>Replaces the current state with a snapshot made by <see cref="CreateSnapshot"/>.</summary>
    protected internal virtual void RestoreSnapshot(object snapshot) =>
        throw new NotSupportedException($"{GetType().Name} does not take snapshots; override SnapshotType, CreateSnapshot and RestoreSnapshot.");

    /// <summary>Applies a new event to the state through <see cref="When"/> and records it for saving.</summary>
    protected void Raise(object @event)
    {
        ArgumentNullException.ThrowIfNull(@event);
        When(@event);
        _uncommitted.Add(@event);
    }

    /// <summary>Applies one event (new or loaded from the store) to the state; must not throw for events it raised before.</summary>
    protected abstract void When(object @event);

    internal void ApplyStored(object @event, long version)
    {
        When(@event);
        Version = version;
    }

    internal void ApplySnapshot(object snapshot, long version)
    {
        RestoreSnapshot(snapshot);
        Version = version;
    }

    internal void MarkSaved(long version)
    {
        Version = version;
        _uncommitted.Clear();
    }
}
