namespace Herald.Internal;

/// <summary>
/// A round trip to a server an adapter's components depend on outside the ports the health checks already exercise (the
/// Redis of the idempotency store and inbox); registered as an enumerable service, each run by Herald's health check.
/// </summary>
/// <remarks>An extension point for Herald's adapter packages, not for application code; it may change in any release.</remarks>
public interface IServerProbe
{
    /// <summary>What is probed, for the health report (<c>"Redis at 127.0.0.1:6379"</c>, never a password).</summary>
    string Name { get; }

    /// <summary>Completes once the server answered; throws when it cannot be reached.</summary>
    ValueTask ProbeAsync(CancellationToken cancellationToken = default);
}
