namespace Herald.Handling.Pipeline;

/// <summary>A step of an endpoint's chain over the whole delivery (trace, settle, decode, upcast, deserialize, retries).</summary>
internal abstract class ConsumeStep
{
    public abstract ValueTask<ConsumeOutcome> InvokeAsync(Consumption consumption);
}

/// <summary>
/// A step of one attempt, inside its scope and unit of work (inbox, checkpoint, handlers). False when the attempt found
/// nothing to do (a duplicate): its unit of work was rolled back and the delivery is acked.
/// </summary>
internal abstract class AttemptStep
{
    public abstract ValueTask<bool> InvokeAsync(Consumption consumption, MessageContext context);
}
