using System.Runtime.ExceptionServices;
using Herald.Transport;

namespace Herald.Handling.Pipeline;

/// <summary>
/// One delivery through an endpoint's decoding steps and one attempt, outside its consumer (built by
/// <see cref="EndpointPipelineFactory.CreateReplay"/>): nothing retries, settles or dead-letters it; what fails is thrown.
/// </summary>
internal sealed class ReplayPipeline(ConsumeStep head)
{
    /// <summary>Runs <paramref name="delivery"/>; returns once its unit of work committed, throws what failed (a decode, a handler, the commit).</summary>
    public async ValueTask RunAsync(Delivery delivery, CancellationToken cancellationToken)
    {
        var consumption = new Consumption();
        consumption.Start(delivery, cancellationToken);
        var outcome = await head.InvokeAsync(consumption).ConfigureAwait(false);
        if (outcome.Verdict == ConsumeVerdict.DeadLetter)
        {
            // Poison as it is now (a type no longer registered, no handler for it): the same reason the chain would give.
            ExceptionDispatchInfo.Throw(outcome.Failure!);
        }
    }
}

/// <summary>The one attempt of a <see cref="ReplayPipeline"/>, in its unit of work; its failure is thrown, not retried.</summary>
internal sealed class ReplayStep(UnitOfWorkStep attempt) : ConsumeStep
{
    public override async ValueTask<ConsumeOutcome> InvokeAsync(Consumption consumption) =>
        await attempt.RunAsync(consumption, attempt: 1).ConfigureAwait(false) ? ConsumeOutcome.Handled : ConsumeOutcome.Duplicate;
}
