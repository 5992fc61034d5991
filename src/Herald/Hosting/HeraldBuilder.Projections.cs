using Herald.EventSourcing;
using Herald.Handling.Pipeline;
using Herald.Persistence;
using Herald.Projections;
using Herald.Reliability.DeadLetters;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace Herald.Hosting;

/// <summary>Projections: read models kept from the event log.</summary>
public sealed partial class HeraldBuilder
{
    private readonly Dictionary<string, ProjectionMode> _projections = new(StringComparer.Ordinal);

    /// <summary>
    /// Registers a projection (its event types join the host's message types). <see cref="ProjectionMode.Async"/> runs it in
    /// the background on one node at a time, from its checkpoint; <see cref="ProjectionMode.Inline"/> runs it in the unit of
    /// work of every aggregate repository's save. Read its tables through <see cref="ReadModels"/>, watch and rebuild it
    /// through <see cref="ProjectionManager"/>.
    /// </summary>
    /// <exception cref="ArgumentException">Another projection has its name, or it handles no event type.</exception>
    public HeraldBuilder AddProjection(Projection projection, ProjectionMode mode = ProjectionMode.Async)
    {
        ArgumentNullException.ThrowIfNull(projection);
        if (!Enum.IsDefined(mode))
        {
            throw new ArgumentOutOfRangeException(nameof(mode), mode, "Use ProjectionMode.Async or ProjectionMode.Inline.");
        }

        if (projection.EventTypes.Count == 0)
        {
            throw new ArgumentException($"Projection '{projection.Name}' handles no event type; declare its handlers with On<TEvent>(...) in its constructor.", nameof(projection));
        }

        if (!_projections.TryAdd(projection.Name, mode))
        {
            throw new ArgumentException($"A projection named '{projection.Name}' is registered already; projection names are unique.", nameof(projection));
        }

        foreach (var eventType in projection.EventTypes)
        {
            MessageTypes.Register(eventType);
        }

        Services.AddSingleton(new ProjectionRegistration(projection, mode));
        Services.TryAddSingleton(sp => new ProjectionManager(
            sp.GetServices<ProjectionRegistration>(),
            sp.GetRequiredService<IEventStore>(),
            sp.GetRequiredService<ICheckpointStore>(),
            sp.GetRequiredService<IReadModelStore>(),
            sp.GetRequiredService<ILeaderElection>(),
            sp.GetRequiredService<EndpointPipelineFactory>(),
            sp.GetRequiredService<UnitOfWorkRunner>(),
            sp.GetRequiredService<TimeProvider>(),
            sp.GetRequiredService<IOptions<ProjectionOptions>>().Value,
            sp.GetService<ILoggerFactory>()));
        // A retry of a projection's dead letter applies its event to the projection again, on whichever node retries it.
        Services.TryAddEnumerable(ServiceDescriptor.Singleton<IDeadLetterRetryTarget, ProjectionRetryTarget>());
        if (mode == ProjectionMode.Async)
        {
            Services.TryAddEnumerable(ServiceDescriptor.Singleton<IHostedService, ProjectionService>());
        }
        else
        {
            Services.TryAddSingleton<InlineProjector>();
        }

        return this;
    }

    /// <summary>Registers a projection created with its parameterless constructor (see <see cref="AddProjection(Projection, ProjectionMode)"/>).</summary>
    public HeraldBuilder AddProjection<TProjection>(ProjectionMode mode = ProjectionMode.Async)
        where TProjection : Projection, new() => AddProjection(new TProjection(), mode);

    /// <summary>Sets how async projections run (batch size, takeover interval, stall threshold).</summary>
    public HeraldBuilder ConfigureProjections(Action<ProjectionOptions> configure)
    {
        ArgumentNullException.ThrowIfNull(configure);
        Services.Configure(configure);
        return this;
    }
}
