using Herald.Projections;
using Herald.Sagas;
using Herald.Persistence;
using Herald.Cqrs;
using Herald.EventSourcing;
using Herald.EventSourcing.InMemory;
using Herald.Cqrs.Validation;
using Herald.Handling;
using Herald.Handling.Pipeline;
using Herald.Hosting;
using Herald.Internal;
using Herald.Messages;
using Herald.Reliability;
using Herald.Reliability.DeadLetters;
using Herald.Reliability.Idempotency;
using Herald.Reliability.Inbox;
using Herald.Reliability.Outbox;
using Herald.Transport;
using Herald.Transport.InMemory;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace Microsoft.Extensions.DependencyInjection;

/// <summary>Adds Herald to a service collection.</summary>
public static class HeraldServiceCollectionExtensions
{
    /// <summary>
    /// Adds Herald (message bus, command and query buses, the hosted consumer of this endpoint, retries, dead letters and
    /// their manager, idempotency) and configures it. Calling it again configures the same instance. Stores default to
    /// the in-memory ones; adapter packages replace them.
    /// </summary>
    public static IServiceCollection AddHerald(this IServiceCollection services, Action<HeraldBuilder>? configure = null)
    {
        ArgumentNullException.ThrowIfNull(services);
        var builder = services.FirstOrDefault(d => d.ServiceType == typeof(HeraldBuilder))?.ImplementationInstance as HeraldBuilder;
        if (builder is null)
        {
            builder = new HeraldBuilder(services);
            Register(services, builder);
        }

        configure?.Invoke(builder);
        return services;
    }

    private static void Register(IServiceCollection services, HeraldBuilder builder)
    {
        services.AddSingleton(builder);
        services.AddSingleton(builder.MessageTypes);
        services.AddSingleton(builder.Routes);
        services.TryAddSingleton(TimeProvider.System);
        services.TryAddSingleton<IMessageSerializer>(_ => builder.CreateSerializer());
        services.TryAddSingleton<EnvelopeFactory>();
        services.TryAddSingleton<ITransport>(sp => new InMemoryTransport(InMemoryTransportOptions.Default, sp.GetRequiredService<TimeProvider>()));
        // Resolved at start, when the collection is final: which scoped handlers can be built without a scope is read then.
        services.AddSingleton(_ => new HandlerRegistry(builder.MessageHandlers, services));
        services.AddSingleton<IMessageBus, MessageBus>();
        services.TryAddSingleton<UnitOfWorkRunner>();
        services.TryAddSingleton<EndpointPipelineFactory>();
        services.AddSingleton<RequestBus>();
        services.AddSingleton<ICommandBus>(sp => sp.GetRequiredService<RequestBus>());
        services.AddSingleton<IQueryBus>(sp => sp.GetRequiredService<RequestBus>());

        // Validation runs first in every command and query pipeline.
        services.Add(ServiceDescriptor.Transient(typeof(IPipelineBehavior<,>), typeof(ValidationBehavior<,>)));
        services.AddSingleton<IValidateOptions<HeraldOptions>, HeraldOptionsValidator>();
        services.AddOptions<HeraldOptions>().ValidateOnStart();
        services.TryAddSingleton<EndpointConsumerStatus>(_ => new EndpointConsumerStatus());
        services.AddSingleton<IHostedService, HeraldHostedService>();
        RegisterReliability(services, builder);
        RegisterEventSourcing(services);

        // One leader per resource within this host; UsePostgres replaces it with one across processes.
        services.TryAddSingleton<ILeaderElection, InProcessLeaderElection>();
    }

    private static void RegisterEventSourcing(IServiceCollection services)
    {
        // Default: one in-memory store serves as event, checkpoint and snapshot store. UseSqlite / UsePostgres replace them.
        services.TryAddSingleton(sp => new InMemoryEventStore(new InMemoryEventStoreOptions { TimeProvider = sp.GetRequiredService<TimeProvider>() }));
        services.TryAddSingleton<IEventStore>(sp => sp.GetRequiredService<InMemoryEventStore>());
        services.TryAddSingleton<ICheckpointStore>(sp => sp.GetRequiredService<InMemoryEventStore>());
        services.TryAddSingleton<ISnapshotStore>(sp => sp.GetRequiredService<InMemoryEventStore>());
    }

    private static void RegisterReliability(IServiceCollection services, HeraldBuilder builder)
    {
        services.AddSingleton(builder.Retries);

        // Default stores: in memory. Adapter packages (SQLite, PostgreSQL, Redis) replace them.
        services.TryAddSingleton<IDeadLetterStore>(_ => new InMemoryDeadLetterStore());
        services.TryAddSingleton<IInbox>(sp => new InMemoryInbox(sp.GetRequiredService<TimeProvider>()));
        services.TryAddSingleton<IOutboxStore>(_ => new InMemoryOutboxStore());
        services.TryAddSingleton<IIdempotencyStore>(sp => new InMemoryIdempotencyStore(sp.GetRequiredService<TimeProvider>()));
        services.TryAddSingleton<ISagaStore>(sp => new InMemorySagaStore(sp.GetRequiredService<TimeProvider>()));
        services.TryAddSingleton(sp => new SagaOrchestrator(
            sp.GetRequiredService<ISagaStore>(),
            sp.GetRequiredService<UnitOfWorkRunner>(),
            sp.GetService<TimeProvider>(),
            sp.GetService<ILogger<SagaOrchestrator>>())
        {
            // As the resume sweep decides: with a shared store another node takes over an instance StaleAfter without a
            // save, so a running step renews it; in memory nothing else runs it, and no renewal is needed.
            StaleAfter = sp.GetRequiredService<ILeaderElection>() is InProcessLeaderElection ? null : sp.GetRequiredService<IOptions<SagaOptions>>().Value.StaleAfter,
        });
        services.TryAddSingleton<SagaTimeouts>();
        services.TryAddSingleton<IReadModelStore>(_ => new InMemoryReadModelStore());
        services.TryAddSingleton<ReadModels>();
        services.TryAddScoped(UnitOfWorkRunner.Adopting(static _ => new InMemoryUnitOfWork()));

        services.TryAddSingleton<OutboxSignal>();
        services.TryAddSingleton<DeadLetterMonitor>();
        services.AddSingleton<IHostedService>(sp => sp.GetRequiredService<DeadLetterMonitor>());
        services.TryAddSingleton<NativeDeadLetterDrain>();
        services.AddSingleton<IHostedService>(sp => sp.GetRequiredService<NativeDeadLetterDrain>());
        services.TryAddSingleton(sp => new DeadLetterManager(
            sp.GetRequiredService<IDeadLetterStore>(),
            sp.GetRequiredService<ITransport>(),
            sp.GetRequiredService<TimeProvider>(),
            sp.GetService<ILoggerFactory>()?.CreateLogger<DeadLetterManager>(),
            sp.GetRequiredService<DeadLetterMonitor>(),
            sp.GetRequiredService<IOptions<DeadLetterOptions>>().Value.BatchSize,
            sp.GetServices<IDeadLetterRetryTarget>()));
        services.TryAddSingleton(sp => new IdempotencyService(
            sp.GetRequiredService<IIdempotencyStore>(),
            sp.GetRequiredService<TimeProvider>(),
            sp.GetRequiredService<IOptions<IdempotencyOptions>>(),
            sp.GetRequiredService<IMessageSerializer>(),
            sp.GetService<ILoggerFactory>()?.CreateLogger<IdempotencyService>()));

        var validator = new ReliabilityOptionsValidator();
        services.AddSingleton<IValidateOptions<DeadLetterOptions>>(validator);
        services.AddSingleton<IValidateOptions<InboxOptions>>(validator);
        services.AddSingleton<IValidateOptions<OutboxOptions>>(validator);
        services.AddSingleton<IValidateOptions<IdempotencyOptions>>(validator);
        services.AddSingleton<IValidateOptions<ProjectionOptions>>(validator);
        services.AddOptions<DeadLetterOptions>().ValidateOnStart();
        services.AddOptions<InboxOptions>().ValidateOnStart();
        services.AddOptions<OutboxOptions>().ValidateOnStart();
        services.AddOptions<IdempotencyOptions>().ValidateOnStart();
        services.AddOptions<ProjectionOptions>().ValidateOnStart();
    }
}
