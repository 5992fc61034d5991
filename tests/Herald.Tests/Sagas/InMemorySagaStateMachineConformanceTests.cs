using Herald.Conformance.Sagas;
using Herald.Hosting;
using Herald.Reliability.DeadLetters;
using Herald.Reliability.Inbox;
using Herald.Sagas;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;

namespace Herald.Tests.Sagas;

/// <summary>State-machine sagas on the in-memory stores; the hosts of one test share one set of stores, as nodes share a database.</summary>
public sealed class InMemorySagaStateMachineConformanceTests : SagaStateMachineConformance
{
    private readonly Dictionary<string, (InMemorySagaStore Sagas, InMemoryInbox Inbox, InMemoryDeadLetterStore DeadLetters)> _stores = [];

    protected override string NewStore()
    {
        var name = Guid.NewGuid().ToString("N");
        _stores[name] = (new InMemorySagaStore(), new InMemoryInbox(TimeProvider.System), new InMemoryDeadLetterStore());
        return name;
    }

    protected override void UseStore(HeraldBuilder herald, string store)
    {
        var (sagas, inbox, deadLetters) = _stores[store];
        herald.Services.Replace(ServiceDescriptor.Singleton<ISagaStore>(sagas));
        herald.Services.Replace(ServiceDescriptor.Singleton<IInbox>(inbox));
        herald.Services.Replace(ServiceDescriptor.Singleton<IDeadLetterStore>(deadLetters));
    }
}
