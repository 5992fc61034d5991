namespace Herald.Internal;

/// <summary>
/// A transport consumer that tells when its consume loop has ended: the host reports a consumer that stopped without being
/// asked to (its endpoint no longer consumes) as unhealthy.
/// </summary>
/// <remarks>An extension point for Herald's adapter packages, not for application code; it may change in any release.</remarks>
public interface IConsumerCompletion
{
    /// <summary>
    /// Completes when the consume loop has ended: successfully after a stop; faulted with the reason when it ended on its own.
    /// </summary>
    Task Completion { get; }
}
