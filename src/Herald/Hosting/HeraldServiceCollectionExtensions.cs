using Herald.Cqrs;
using Herald.Cqrs.Validation;
using Herald.Handling;
using Herald.Hosting;
using Herald.Messages;
using Herald.Transport;
using Herald.Transport.InMemory;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Options;

namespace Microsoft.Extensions.DependencyInjection;

/// <summary>Adds Herald to a service collection.</summary>
public static class HeraldServiceCollectionExtensions
{
    /// <summary>
    /// Adds Herald (message bus, command and query buses, the hosted consumer of this endpoint) and configures it.
    /// Calling it again configures the same instance.
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
        services.AddSingleton(_ => new HandlerRegistry(builder.MessageHandlers));
        services.AddSingleton<IMessageBus, MessageBus>();
        services.AddSingleton<RequestBus>();
        services.AddSingleton<ICommandBus>(sp => sp.GetRequiredService<RequestBus>());
        services.AddSingleton<IQueryBus>(sp => sp.GetRequiredService<RequestBus>());

        // Validation runs first in every command and query pipeline.
        services.Add(ServiceDescriptor.Transient(typeof(IPipelineBehavior<,>), typeof(ValidationBehavior<,>)));
        services.AddSingleton<IValidateOptions<HeraldOptions>, HeraldOptionsValidator>();
        services.AddOptions<HeraldOptions>().ValidateOnStart();
        services.AddSingleton<IHostedService, HeraldHostedService>();
    }
}
