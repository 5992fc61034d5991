using Herald.AspNetCore;
using Herald.AspNetCore.Health;
using Herald.Internal;

namespace Microsoft.Extensions.DependencyInjection;

/// <summary>Adds Herald's health checks.</summary>
public static class HeraldHealthChecksBuilderExtensions
{
    /// <summary>
    /// Adds <c>herald-event-store</c> (the log's head position), <c>herald-transport</c> (consumer started and not stopped on its own, broker answers),
    /// <c>herald-projections</c> (Degraded when one is stalled or lags too far) and <c>herald-dead-letters</c> (Degraded when
    /// too many failed within the window) and <c>herald-servers</c> (PINGs the other servers adapters use, such as Redis), tagged <c>herald</c>, each reporting its figures as data.
    /// </summary>
    public static IHealthChecksBuilder AddHerald(this IHealthChecksBuilder builder, Action<HeraldHealthOptions>? configure = null)
    {
        ArgumentNullException.ThrowIfNull(builder);
        var options = builder.Services.AddCheckedOptions(configure, HeraldHealthOptions.Check);
        options.Validate(
                o => o.Timeout > TimeSpan.Zero && o.MaxProjectionLag >= 0 && o.MaxDeadLetterGrowth >= 0 && o.DeadLetterWindow > TimeSpan.Zero,
                "HeraldHealthOptions: Timeout and DeadLetterWindow must be positive, MaxProjectionLag and MaxDeadLetterGrowth not negative.")
            .ValidateOnStart();
        string[] tags = [HealthCheckNames.Tag];
        return builder
            .AddCheck<EventStoreHealthCheck>(HealthCheckNames.EventStore, tags: tags)
            .AddCheck<TransportHealthCheck>(HealthCheckNames.Transport, tags: tags)
            .AddCheck<ProjectionsHealthCheck>(HealthCheckNames.Projections, tags: tags)
            .AddCheck<DeadLettersHealthCheck>(HealthCheckNames.DeadLetters, tags: tags)
            .AddCheck<ServersHealthCheck>(HealthCheckNames.Servers, tags: tags);
    }
}
