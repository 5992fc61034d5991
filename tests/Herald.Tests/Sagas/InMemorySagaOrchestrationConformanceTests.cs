using Herald.Conformance.Sagas;
using Herald.Hosting;
using Herald.Sagas;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;

namespace Herald.Tests.Sagas;

/// <summary>Orchestrated sagas on the in-memory store: one host at a time (it serves one process), a restart sharing the store.</summary>
public sealed class InMemorySagaOrchestrationConformanceTests : SagaOrchestrationConformance
{
    private readonly Dictionary<string, InMemorySagaStore> _stores = [];

    protected override bool SharedStore => false;

    protected override string NewStore()
    {
        var name = Guid.NewGuid().ToString("N");
        _stores[name] = new InMemorySagaStore();
        return name;
    }

    protected override void UseStore(HeraldBuilder herald, string store) =>
        herald.Services.Replace(ServiceDescriptor.Singleton<ISagaStore>(_stores[store]));
}
