using Herald.Messages;
using Herald.Persistence;

namespace Herald.Projections;

/// <summary>
/// Runs the inline projections over events an aggregate repository appends, in the same unit of work: the read models
/// change with the events, or not at all.
/// </summary>
internal sealed class InlineProjector(IEnumerable<ProjectionRegistration> registrations, IReadModelStore store)
{
    private readonly Projection[] _projections = [.. registrations.Where(r => r.Mode == ProjectionMode.Inline).Select(r => r.Projection)];

    public async ValueTask ApplyAsync(
        string stream, IReadOnlyList<object> events, IReadOnlyList<Envelope> envelopes, IUnitOfWork unitOfWork, IServiceProvider services, CancellationToken cancellationToken)
    {
        // Inline projections are never rebuilt beside themselves, so they always write generation 1.
        var run = new ProjectionRun(stream, Position: null, Generation: 1);
        for (var i = 0; i < events.Count; i++)
        {
            foreach (var projection in _projections)
            {
                var context = new ProjectionContext(projection, store, envelopes[i], run, unitOfWork, services);
                await projection.ApplyAsync(events[i], context, cancellationToken).ConfigureAwait(false);
            }
        }
    }
}
