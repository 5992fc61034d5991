using Herald.Persistence;

namespace Herald.Handling.Pipeline;

/// <summary>
/// How a checkpointed subscription applies several events in one unit of work: at most <see cref="CommitEvery"/> events,
/// each through <see cref="Attempt"/> around the handlers (no checkpoint of its own), then <see cref="Checkpoint"/> once with
/// the positions of the first and the last event of the batch.
/// </summary>
internal sealed record SubscriptionBatching(
    int CommitEvery,
    Func<AttemptStep, AttemptStep> Attempt,
    Func<long, long, IUnitOfWork, CancellationToken, ValueTask> Checkpoint);

/// <summary>The end of a batch's decoding steps: the event is decoded, and the batch runs its handlers itself.</summary>
internal sealed class DecodedStep : ConsumeStep
{
    public override ValueTask<ConsumeOutcome> InvokeAsync(Consumption consumption) => new(ConsumeOutcome.Handled);
}
