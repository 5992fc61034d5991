namespace Herald.Persistence;

/// <summary>
/// Thrown instead of a commit when work that joined the unit of work (a command sent from a handler) failed, even though
/// the failure was caught: its writes share the unit of work. It keeps that failure as the inner exception, and a retry
/// policy classifies it by it, as the failure would have been had it not been caught.
/// </summary>
internal sealed class UnitOfWorkDoomedException(Exception failure)
    : HeraldException(
        $"The unit of work was rolled back: work that joined it (a command sent from the handler) failed with {failure.GetType().Name}: {failure.Message} Its writes share this unit of work, so nothing of it commits, even though the failure was caught.",
        failure);
