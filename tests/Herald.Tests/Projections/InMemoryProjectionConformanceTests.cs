using Herald.Conformance.Projections;
using Herald.EventSourcing;
using Herald.EventSourcing.InMemory;
using Herald.Hosting;
using Herald.Persistence;
using Herald.Projections;
using Herald.Reliability.DeadLetters;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;

namespace Herald.Tests.Projections;

/// <summary>The projection contract on the in-memory stores; the hosts of one test share one set of stores, as nodes share a database.</summary>
public sealed class InMemoryProjectionConformanceTests : ProjectionConformance
{
    private readonly Dictionary<string, (InMemoryEventStore Events, InMemoryReadModelStore ReadModels, InMemoryDeadLetterStore DeadLetters, InProcessLeaderElection Election)> _stores = [];

    protected override string NewStore()
    {
        var name = Guid.NewGuid().ToString("N");
        _stores[name] = (new InMemoryEventStore(), new InMemoryReadModelStore(), new InMemoryDeadLetterStore(), new InProcessLeaderElection());
        return name;
    }

    protected override void UseStore(HeraldBuilder herald, string store)
    {
        var (events, readModels, deadLetters, election) = _stores[store];
        herald.Services.Replace(ServiceDescriptor.Singleton<ILeaderElection>(election));
        herald.Services.Replace(ServiceDescriptor.Singleton(events));
        herald.Services.Replace(ServiceDescriptor.Singleton<IReadModelStore>(readModels));
        herald.Services.Replace(ServiceDescriptor.Singleton<IDeadLetterStore>(deadLetters));
    }
}
