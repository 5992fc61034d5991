using Herald.AspNetCore;
using Herald.AspNetCore.Health;

namespace Microsoft.Extensions.DependencyInjection;

/// <summary>Adds Herald's health checks.</summary>
public static class HeraldHealthChecksBuilderExtensions
{
    /// <summary>
    /// Adds <c>herald-event-store</c> (the log's head position), <c>herald-transport</c> (consumer started, broker answers),
    /// <c>herald-projections</c> (Degraded when one is stalled or lags too far) and <c>herald-dead-letters</c> (Degraded when
    /// too many failed within the window), tagged <c>herald</c>, each reporting its figures as data.
    /// </summary>
    public static IHealthChecksBuilder AddHerald(this IHealthChecksBuilder builder, Action<HeraldHealthOptions>? configure = null)
    {
        ArgumentNullException.ThrowIfNull(builder);
        var options = builder.Services.AddOptions<HeraldHealthOptions>();
        if (configure is not null)
        {
            options.Configure(configure);
        }

        string[] tags = [HealthCheckNames.Tag];
        return builder
            .AddCheck<EventStoreHealthCheck>(HealthCheckNames.EventStore, tags: tags)
            .AddCheck<TransportHealthCheck>(HealthCheckNames.Transport, tags: tags)
            .AddCheck<ProjectionsHealthCheck>(HealthCheckNames.Projections, tags: tags)
            .AddCheck<DeadLettersHealthCheck>(HealthCheckNames.DeadLetters, tags: tags);
    }
}
