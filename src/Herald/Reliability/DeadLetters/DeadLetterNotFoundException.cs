namespace Herald.Reliability.DeadLetters;

/// <summary>
/// A dead letter deleted in a unit of work (<see cref="IDeadLetterStore.DeleteAsync(Guid, Persistence.IUnitOfWork, CancellationToken)"/>)
/// was not there to delete: another deleter (a concurrent retry, a purge) took it first. The unit of work's commit throws it
/// and writes nothing, so what the unit of work did with the dead letter (a projection's retry) is done once.
/// </summary>
public sealed class DeadLetterNotFoundException : HeraldException
{
    /// <summary>Creates the exception for the dead letter <paramref name="deadLetterId"/>.</summary>
    public DeadLetterNotFoundException(Guid deadLetterId)
        : base($"Dead letter {deadLetterId} is gone: another retry or a purge deleted it first. This unit of work wrote nothing.")
    {
        DeadLetterId = deadLetterId;
    }

    /// <summary>The dead letter the unit of work deleted.</summary>
    public Guid DeadLetterId { get; }
}
