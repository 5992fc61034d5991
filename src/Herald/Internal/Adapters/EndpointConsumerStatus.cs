using System.Diagnostics.CodeAnalysis;

namespace Herald.Internal;

/// <summary>Whether this host's endpoint consumer stopped without being asked to; the health checks read it.</summary>
/// <remarks>An extension point for Herald's packages, not for application code; it may change in any release.</remarks>
public sealed class EndpointConsumerStatus
{
    private volatile Tuple<string, Exception>? _fault;

    internal EndpointConsumerStatus()
    {
    }

    /// <summary>True, with the queue and the reason, when the host's consumer stopped on its own since it last started.</summary>
    public bool TryGetFault([NotNullWhen(true)] out string? queue, [NotNullWhen(true)] out Exception? reason)
    {
        var fault = _fault;
        queue = fault?.Item1;
        reason = fault?.Item2;
        return fault is not null;
    }

    internal void Faulted(string queue, Exception reason) => _fault = Tuple.Create(queue, reason);

    internal void Clear() => _fault = null;
}
