namespace Herald.Sagas;

/// <summary>Where a saga instance stands.</summary>
public enum SagaStatus
{
    /// <summary>Steps (or transitions) are still running; an instance left in this state with no runner is resumed by the resume sweep.</summary>
    Running = 0,

    /// <summary>Every step succeeded, or the state machine reached a final state.</summary>
    Completed = 1,

    /// <summary>A step failed and the completed steps' compensations are running, in reverse order; resumed by the resume sweep when left without a runner.</summary>
    Compensating = 2,

    /// <summary>A step failed and every completed step was compensated.</summary>
    Compensated = 3,

    /// <summary>A compensation failed after its retries: the instance is parked, visible, and never dropped; <see cref="SagaOrchestrator.ResumeParkedAsync{TData}"/> runs its compensations again.</summary>
    Failed = 4,
}
