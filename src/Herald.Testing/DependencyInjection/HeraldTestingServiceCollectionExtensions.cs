using Herald.Hosting;
using Herald.Internal;
using Herald.Reliability.DeadLetters;
using Herald.Testing;
using Herald.Testing.Internal;
using Herald.Transport;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Microsoft.Extensions.Time.Testing;

namespace Microsoft.Extensions.DependencyInjection;

/// <summary>Adds Herald's test harness to a host.</summary>
public static class HeraldTestingServiceCollectionExtensions
{
    /// <summary>
    /// Adds Herald configured by <paramref name="configure"/> and turns the host into a test harness: a fake clock as the
    /// host's <see cref="TimeProvider"/>, and the transport and dead-letter store observed. Resolve
    /// <see cref="HeraldTestHarness"/> from the started host. Call it after the application's own registrations (as
    /// <c>ConfigureTestServices</c> does), so the transport it observes is the final one.
    /// </summary>
    public static IServiceCollection AddHeraldTestHarness(this IServiceCollection services, Action<HeraldBuilder>? configure = null)
    {
        ArgumentNullException.ThrowIfNull(services);
        if (services.Any(d => d.ServiceType == typeof(HeraldTestHarness)))
        {
            services.AddHerald(configure);
            return services;
        }

        // A test whose handler hangs should not hold its host's stop for the production default (30 s); set before the
        // application's configuration, so a value it sets wins.
        services.Configure<HeraldOptions>(o => o.ShutdownTimeout = TimeSpan.FromSeconds(5));
        services.AddHerald(configure);

        services.AddCheckedOptions<HeraldTestHarnessOptions>(null, static (options, problems) => problems.AddMessages(options.Validate()));
        services.AddSingleton(sp => new FakeTimeProvider(sp.GetRequiredService<IOptions<HeraldTestHarnessOptions>>().Value.StartTime));
        services.Replace(ServiceDescriptor.Singleton<TimeProvider>(sp => sp.GetRequiredService<FakeTimeProvider>()));
        services.AddSingleton(sp => new HeraldTestHarness(
            sp,
            sp.GetRequiredService<FakeTimeProvider>(),
            sp.GetRequiredService<IOptions<HeraldTestHarnessOptions>>(),
            sp.GetService<ILoggerFactory>()));
        services.AddSingleton(sp => sp.GetRequiredService<HeraldTestHarness>().Recorder);
        Decorate<ITransport>(services, (sp, inner) => new ObservingTransport(inner, sp.GetRequiredService<HarnessRecorder>()));
        Decorate<IDeadLetterStore>(services, (sp, inner) => new ObservingDeadLetterStore(inner, sp.GetRequiredService<HarnessRecorder>()));

        // First of the middleware, so it sees what any later one throws as well as the handlers.
        var firstMiddleware = services.TakeWhile(d => d.ServiceType != typeof(Herald.Handling.IMessageMiddleware)).Count();
        services.Insert(firstMiddleware, ServiceDescriptor.Singleton<Herald.Handling.IMessageMiddleware, ObservingMiddleware>());

        // Checked before Herald's consumers start: a transport configured after the harness would go unobserved.
        services.Insert(0, ServiceDescriptor.Singleton<IHostedService, HarnessStartCheck>());
        return services;
    }

    /// <summary>Changes the harness's settings (default expectation timeout, where the fake clock starts).</summary>
    public static HeraldBuilder ConfigureTestHarness(this HeraldBuilder builder, Action<HeraldTestHarnessOptions> configure)
    {
        ArgumentNullException.ThrowIfNull(builder);
        ArgumentNullException.ThrowIfNull(configure);
        builder.Services.Configure(configure);
        return builder;
    }

    // Replaces the registration of TService by one that wraps what it made.
    private static void Decorate<TService>(IServiceCollection services, Func<IServiceProvider, TService, TService> wrap)
        where TService : class
    {
        var descriptor = services.LastOrDefault(d => d.ServiceType == typeof(TService) && !d.IsKeyedService)
            ?? throw new InvalidOperationException($"Herald registered no {typeof(TService).Name}; the harness has nothing to observe.");
        services.RemoveAll<TService>();
        services.AddSingleton(sp => wrap(sp, Create<TService>(sp, descriptor)));
    }

    private static TService Create<TService>(IServiceProvider services, ServiceDescriptor descriptor)
        where TService : class =>
        (TService)(descriptor.ImplementationInstance
            ?? descriptor.ImplementationFactory?.Invoke(services)
            ?? ActivatorUtilities.CreateInstance(services, descriptor.ImplementationType!));
}
