using Herald.EventSourcing;
using Herald.EventSourcing.Aggregates;
using Herald.EventSourcing.InMemory;
using Herald.EventSourcing.Publishing;
using Herald.Internal;
using Herald.Messages;
using Herald.Persistence;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Hosting;

namespace Herald.Hosting;

/// <summary>Event sourcing: the event store, aggregate repositories and publishing stored events to the bus.</summary>
public sealed partial class HeraldBuilder
{
    /// <summary>Uses an in-memory event store (also the checkpoint and snapshot store); the default when no other is configured.</summary>
    public HeraldBuilder UseInMemoryEventStore(InMemoryEventStoreOptions? options = null)
    {
        Services.Replace(ServiceDescriptor.Singleton(sp => new InMemoryEventStore(options ?? new InMemoryEventStoreOptions { TimeProvider = sp.GetRequiredService<TimeProvider>() })));
        return this;
    }

    /// <summary>
    /// Registers the repository of an aggregate type: a scoped <see cref="AggregateRepository{TAggregate}"/> that saves through
    /// the scope's unit of work (inject it into handlers; outside one, run the work through <see cref="UnitOfWorkRunner"/>).
    /// </summary>
    public HeraldBuilder AddAggregate<TAggregate>(AggregateOptions? options = null)
        where TAggregate : Aggregate, new()
    {
        Services.TryAddScoped(sp => new AggregateRepository<TAggregate>(sp, options));
        return this;
    }

    /// <summary>
    /// Publishes every stored event (or those the filter selects) to the topic named after its type, in order, from a
    /// checkpointed subscription: an event reaches the bus once its append committed, even after a crash.
    /// </summary>
    public HeraldBuilder PublishStoredEvents(Action<EventPublishingOptions>? configure = null)
    {
        Services.AddCheckedOptions(configure, EventPublishingOptions.Check);
        Services.TryAddEnumerable(ServiceDescriptor.Singleton<IHostedService, StoredEventPublisher>());
        return this;
    }
}
