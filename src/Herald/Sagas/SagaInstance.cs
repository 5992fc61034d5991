namespace Herald.Sagas;

/// <summary>
/// The persisted state of one saga instance, the same record for orchestrated sagas (steps) and state machines (states).
/// It is immutable: a change is a copy made with <c>with</c> and saved with the version it was loaded at.
/// </summary>
public sealed record SagaInstance
{
    /// <summary>The saga's name (its definition); instances are unique per name and id.</summary>
    public required string SagaType { get; init; }

    /// <summary>The instance's id, which the messages of this instance correlate to.</summary>
    public required string Id { get; init; }

    /// <summary>Where the instance stands.</summary>
    public required SagaStatus Status { get; init; }

    /// <summary>The state machine's current state, or the name of the step an orchestrated saga is at; null when none.</summary>
    public string? State { get; init; }

    /// <summary>The index of the step an orchestrated saga runs next (or compensates next, while compensating).</summary>
    public int CurrentStep { get; init; }

    /// <summary>The names of the steps that completed, in the order they did.</summary>
    public IReadOnlyList<string> CompletedSteps { get; init; } = [];

    /// <summary>The saga's data, serialized (JSON by default).</summary>
    public ReadOnlyMemory<byte> Data { get; init; }

    /// <summary>The timeouts a state machine's instance holds (scheduled, not yet fired, cancelled or replaced).</summary>
    public IReadOnlyList<SagaTimeout> Timeouts { get; init; } = [];

    /// <summary>The error that made the saga compensate or fail; null while nothing failed.</summary>
    public string? Error { get; init; }

    /// <summary>When the instance was first saved.</summary>
    public DateTimeOffset CreatedAt { get; init; }

    /// <summary>When the instance was last saved.</summary>
    public DateTimeOffset UpdatedAt { get; init; }

    /// <summary>
    /// The version the instance was loaded at: 0 for an instance not saved yet. A save expects the stored version to be
    /// this one, and the stored version becomes one more (optimistic concurrency).
    /// </summary>
    public long Version { get; init; }

    /// <summary>True once nothing more will run for the instance (completed, compensated or parked as failed).</summary>
    public bool IsFinished => Status is SagaStatus.Completed or SagaStatus.Compensated or SagaStatus.Failed;
}
