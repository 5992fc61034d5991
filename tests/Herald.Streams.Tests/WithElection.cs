using Herald.Persistence;

namespace Herald.Streams.Tests;

/// <summary>An application's services with the leader election (and, when given, the clock) a processor gets replaced.</summary>
internal sealed class WithElection(IServiceProvider services, ILeaderElection election, TimeProvider? time = null) : IServiceProvider
{
    public object? GetService(Type serviceType) =>
        serviceType == typeof(ILeaderElection) ? election
        : serviceType == typeof(TimeProvider) && time is not null ? time
        : services.GetService(serviceType);
}
