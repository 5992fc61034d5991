using Herald.Projections;
using Herald.Sagas;
using Herald.EventSourcing;
using Herald.Hosting;
using Herald.Reliability.DeadLetters;
using Herald.Reliability.Idempotency;
using Herald.Reliability.Inbox;
using Herald.Reliability.Outbox;
using Herald.Transport;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;

namespace Herald.Internal;

/// <summary>
/// What every adapter package's <c>UseX</c> does alike: options validated at start listing every problem, a component started
/// with the host, a store registered as the host's persistence or a component as its transport.
/// </summary>
/// <remarks>An extension point for Herald's adapter packages, not for application code; it may change in any release.</remarks>
public static class AdapterRegistration
{
    /// <summary>
    /// Adds <typeparamref name="TOptions"/>, applies <paramref name="configure"/>, and validates them when the host starts with
    /// <paramref name="check"/>, which adds every problem it finds (registered once per options type).
    /// </summary>
    public static OptionsBuilder<TOptions> AddCheckedOptions<TOptions>(this IServiceCollection services, Action<TOptions>? configure, Action<TOptions, OptionsProblems> check)
        where TOptions : class
    {
        ArgumentNullException.ThrowIfNull(services);
        ArgumentNullException.ThrowIfNull(check);
        var options = services.AddOptions<TOptions>();
        if (configure is not null)
        {
            options.Configure(configure);
        }

        options.ValidateOnStart();
        services.TryAddEnumerable(ServiceDescriptor.Singleton<IValidateOptions<TOptions>, CheckedOptionsValidator<TOptions>>(_ => new CheckedOptionsValidator<TOptions>(check)));
        return options;
    }

    /// <summary>
    /// Starts the registered <typeparamref name="TService"/> with <paramref name="start"/> when the host starts, if it is a
    /// <typeparamref name="TComponent"/> (once, however often this is called). With <paramref name="beforeOtherHostedServices"/>
    /// it starts before every hosted service registered so far, such as Herald's consumers.
    /// </summary>
    public static IServiceCollection StartWithHost<TService, TComponent>(
        this IServiceCollection services,
        Func<TComponent, CancellationToken, Task> start,
        bool beforeOtherHostedServices = false)
        where TService : class
        where TComponent : class
    {
        ArgumentNullException.ThrowIfNull(services);
        ArgumentNullException.ThrowIfNull(start);
        if (services.Any(d => d.ServiceType == typeof(IHostedService) && d.ImplementationType == typeof(ComponentStarter<TService, TComponent>)))
        {
            return services;
        }

        services.TryAddSingleton(new ComponentStart<TService, TComponent>(start));
        var starter = ServiceDescriptor.Singleton<IHostedService, ComponentStarter<TService, TComponent>>();
        if (!beforeOtherHostedServices)
        {
            services.Add(starter);
            return services;
        }

        // Hosted services start in registration order.
        var index = 0;
        while (index < services.Count && services[index].ServiceType != typeof(IHostedService))
        {
            index++;
        }

        services.Insert(index, starter);
        return services;
    }

    /// <summary>
    /// Uses the transport <paramref name="create"/> makes as the host's (replacing any other) and starts it with
    /// <paramref name="start"/> when the host starts, so send-only hosts also fail the start on a wrong address.
    /// </summary>
    public static HeraldBuilder UseStartedTransport<TTransport>(this HeraldBuilder builder, Func<IServiceProvider, TTransport> create, Func<TTransport, CancellationToken, Task> start)
        where TTransport : class, ITransport
    {
        ArgumentNullException.ThrowIfNull(builder);
        ArgumentNullException.ThrowIfNull(create);
        builder.Services.StartWithHost<ITransport, TTransport>(start);
        return builder.UseTransport(create);
    }

    /// <summary>
    /// Adds <typeparamref name="TOptions"/> checked at start (see <see cref="AddCheckedOptions"/>) and uses the transport
    /// <paramref name="create"/> makes of them, with the host's clock and loggers, as the host's, started with <paramref name="start"/>:
    /// the whole of a broker package's <c>UseX</c>.
    /// </summary>
    public static HeraldBuilder UseStartedTransport<TOptions, TTransport>(
        this HeraldBuilder builder,
        Action<TOptions> configure,
        Action<TOptions, OptionsProblems> check,
        Func<TOptions, TimeProvider, ILoggerFactory, TTransport> create,
        Func<TTransport, CancellationToken, Task> start)
        where TOptions : class
        where TTransport : class, ITransport
    {
        ArgumentNullException.ThrowIfNull(builder);
        ArgumentNullException.ThrowIfNull(configure);
        ArgumentNullException.ThrowIfNull(create);
        builder.Services.AddCheckedOptions(configure, check);
        return builder.UseStartedTransport(
            sp => create(
                sp.GetRequiredService<IOptions<TOptions>>().Value,
                sp.GetService<TimeProvider>() ?? TimeProvider.System,
                sp.GetService<ILoggerFactory>() ?? NullLoggerFactory.Instance),
            start);
    }

    /// <summary>
    /// Registers one store as the host's event, checkpoint and snapshot store, the reliability stores on its database in place
    /// of the in-memory ones, its unit of work as the host's (see <see cref="HeraldBuilder.UsePersistence"/>), and starts it
    /// with the host.
    /// </summary>
    public static HeraldBuilder UsePersistenceStores<TStore>(this HeraldBuilder builder, PersistenceRegistration<TStore> registration)
        where TStore : class, IEventStore, ICheckpointStore, ISnapshotStore
    {
        ArgumentNullException.ThrowIfNull(builder);
        ArgumentNullException.ThrowIfNull(registration);
        var services = builder.Services;
        services.Replace(ServiceDescriptor.Singleton(registration.CreateStore));
        services.Replace(ServiceDescriptor.Singleton<IEventStore>(sp => sp.GetRequiredService<TStore>()));
        services.Replace(ServiceDescriptor.Singleton<ICheckpointStore>(sp => sp.GetRequiredService<TStore>()));
        services.Replace(ServiceDescriptor.Singleton<ISnapshotStore>(sp => sp.GetRequiredService<TStore>()));
        services.Replace(ServiceDescriptor.Singleton(sp => registration.DeadLetters(sp.GetRequiredService<TStore>())));
        services.Replace(ServiceDescriptor.Singleton(sp => registration.Outbox(sp.GetRequiredService<TStore>())));
        services.Replace(ServiceDescriptor.Singleton(sp => registration.Inbox(sp.GetRequiredService<TStore>(), sp.GetService<TimeProvider>())));
        services.Replace(ServiceDescriptor.Singleton(sp => registration.Idempotency(
            sp.GetRequiredService<TStore>(),
            sp.GetService<TimeProvider>(),
            IdempotencyKeys.Prefix(sp.GetService<IHostEnvironment>()?.ApplicationName))));
        services.Replace(ServiceDescriptor.Singleton(sp => registration.Sagas(sp.GetRequiredService<TStore>())));
        services.Replace(ServiceDescriptor.Singleton(sp => registration.ReadModels(sp.GetRequiredService<TStore>())));
        builder.UsePersistence(registration.Package, sp => registration.BeginUnitOfWork(sp.GetRequiredService<TStore>()));
        services.StartWithHost<TStore, TStore>(registration.StartStore);
        return builder;
    }
}
