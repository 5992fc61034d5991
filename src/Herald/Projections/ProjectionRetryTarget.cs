using Herald.EventSourcing;
using Herald.Handling.Pipeline;
using Herald.Reliability.DeadLetters;

namespace Herald.Projections;

/// <summary>
/// The retry of a projection's dead letter (registered by <c>AddProjection</c>): its stored event applied to the projection
/// again, through the projection's own steps (decode, upcast, its handler) in one unit of work on the generation of its read
/// models the event failed in (the one that serves, or the one a rebuild is filling), which also deletes the dead letter:
/// the event is applied once, however many retries of it run at once (all but one find it gone at their commit and write
/// nothing) or fail after the commit. Its checkpoint is not written: it is past the event already (the runner moved on when
/// it dead-lettered it) and stays where the runner has it. The dead letter of a generation a rebuild replaced is refused:
/// the rebuild replayed its event into the generation that serves (and dead-lettered it there again if it failed again).
/// </summary>
internal sealed class ProjectionRetryTarget(
    IEnumerable<ProjectionRegistration> registrations, EndpointPipelineFactory pipelines, IReadModelStore readModels, ICheckpointStore checkpoints) : IDeadLetterRetryTarget
{
    private readonly Dictionary<string, Projection> _projections = registrations.ToDictionary(r => r.Projection.Name, r => r.Projection, StringComparer.Ordinal);

    public DeadLetterOrigin Origin => DeadLetterOrigin.Projection;

    public async ValueTask<bool> RetryAsync(DeadLetter deadLetter, CancellationToken cancellationToken)
    {
        if (!_projections.TryGetValue(deadLetter.Endpoint, out var projection))
        {
            throw new DeadLetterRetryRefusedException(
                $"Dead letter {deadLetter.Id} came from projection '{deadLetter.Endpoint}', which is not registered on this host: retry it on a host that registers it (AddProjection). It stays.");
        }

        if (DeadLetterHeaders.Source(deadLetter.Envelope) is not (Stream: { } stream, Position: { } position))
        {
            throw new DeadLetterRetryRefusedException(
                $"Dead letter {deadLetter.Id} of projection '{projection.Name}' does not say where its event is stored (its stream and position headers are missing), so it cannot be applied again. It stays.");
        }

        // One that does not name its generation (an unreadable event's, or one stored before they did) goes to the one serving.
        var serving = await ProjectionManager.GenerationAsync(checkpoints, projection.Name, cancellationToken).ConfigureAwait(false);
        var generation = DeadLetterHeaders.Subscription(deadLetter.Envelope) is { } subscription
            ? ProjectionManager.GenerationOf(projection.Name, subscription) ?? serving
            : serving;
        if (generation < serving)
        {
            throw new DeadLetterRetryRefusedException(
                $"Dead letter {deadLetter.Id} of projection '{projection.Name}' failed in generation {generation}, which a rebuild replaced: the rebuild replayed its event into generation {serving} (and dead-lettered it again there, under a dead letter of its own, if it failed again), so it is not applied a second time. Delete it.");
        }

        var replay = pipelines.CreateReplay(
            projection.Name, next => new ProjectionRetryStep(generation, pipelines.DeadLetters, deadLetter.Id, next), ProjectionInvoker.Handlers(projection, readModels));
        var envelope = DeadLetterHeaders.Original(deadLetter.Envelope) with { DeliveryAttempt = 1 };
        var delivery = new RecordedEventDelivery(envelope, projection.Name, ProjectionManager.CheckpointId(projection.Name, generation), stream, position);
        await replay.RunAsync(delivery, cancellationToken).ConfigureAwait(false);
        return true;
    }
}
