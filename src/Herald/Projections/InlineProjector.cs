using Herald.EventSourcing;
using Herald.Messages;
using Herald.Persistence;

namespace Herald.Projections;

/// <summary>
/// Runs the inline projections over events an aggregate repository appends, in the same unit of work: the read models
/// change with the events, or not at all.
/// </summary>
internal sealed class InlineProjector(IEnumerable<ProjectionRegistration> registrations, IReadModelStore store, ICheckpointStore checkpoints)
{
    private readonly Projection[] _projections = [.. registrations.Where(r => r.Mode == ProjectionMode.Inline).Select(r => r.Projection)];

    public async ValueTask ApplyAsync(
        string stream, IReadOnlyList<object> events, IReadOnlyList<Envelope> envelopes, IUnitOfWork unitOfWork, IServiceProvider services, CancellationToken cancellationToken)
    {
        // Never rebuilt inline, but maybe as async (the way to rebuild one): each writes the generation that serves, which
        // the read-model store checks again at the commit.
        var runs = new ProjectionRun[_projections.Length];
        for (var p = 0; p < runs.Length; p++)
        {
            var generation = await ProjectionManager.GenerationAsync(checkpoints, _projections[p].Name, cancellationToken).ConfigureAwait(false);
            runs[p] = new ProjectionRun(stream, Position: null, generation);
        }

        for (var i = 0; i < events.Count; i++)
        {
            for (var p = 0; p < runs.Length; p++)
            {
                var context = new ProjectionContext(_projections[p], store, envelopes[i], runs[p], unitOfWork, services);
                await _projections[p].ApplyAsync(events[i], context, cancellationToken).ConfigureAwait(false);
            }
        }
    }
}
