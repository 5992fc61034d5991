using Herald.EventSourcing.Aggregates;
using Herald.Messages;

namespace Herald.Conformance.EventSourcing;

/// <summary>The event the conformance aggregate raises (schema v3: v1 had "value", v2 renamed it "amount", v3 added "note").</summary>
/// <param name="Amount">How much to add.</param>
/// <param name="Note">Set by the v2 -> v3 upcaster for migrated events.</param>
public sealed record CounterIncremented(int Amount, string? Note);

/// <summary>The snapshot state of the conformance aggregate.</summary>
/// <param name="Total">The running total.</param>
public sealed record CounterState(int Total);

/// <summary>A small aggregate the conformance suite loads and saves: a running total of increments.</summary>
public sealed class ConformanceCounter : Aggregate
{
    /// <summary>The logical name of <see cref="CounterIncremented"/>.</summary>
    public const string IncrementedType = "conformance-counter-incremented";

    /// <summary>The running total.</summary>
    public int Total { get; private set; }

    /// <summary>How many events were applied to this instance (not counting a restored snapshot).</summary>
    public int EventsApplied { get; private set; }

    /// <summary>Notes of applied events, in order.</summary>
    public List<string?> Notes { get; } = [];

    /// <inheritdoc />
    protected override Type? SnapshotType => typeof(CounterState);

    /// <summary>A registry with the counter's event at its current schema version 3.</summary>
    public static MessageTypeRegistry CreateRegistry()
    {
        var registry = new MessageTypeRegistry();
        registry.Register<CounterIncremented>(IncrementedType, 3);
        return registry;
    }

    /// <summary>Starts the counter with an id (a new aggregate).</summary>
    public void Start(string id) => Id = id;

    /// <summary>Raises an increment.</summary>
    public void Increment(int amount) => Raise(new CounterIncremented(amount, null));

    /// <inheritdoc />
    protected override void When(object @event)
    {
        if (@event is CounterIncremented incremented)
        {
            Total += incremented.Amount;
            EventsApplied++;
            Notes.Add(incremented.Note);
        }
    }

    /// <inheritdoc />
    protected override object CreateSnapshot() => new CounterState(Total);

    /// <inheritdoc />
    protected override void RestoreSnapshot(object snapshot) => Total = ((CounterState)snapshot).Total;
}
