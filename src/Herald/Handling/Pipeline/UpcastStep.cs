using Herald.EventSourcing.Upcasting;
using Herald.Reliability.DeadLetters;

namespace Herald.Handling.Pipeline;

/// <summary>
/// Migrates a consumed event to its newest schema version with the registered upcasters before it is deserialized, so an
/// old event arriving over a transport reads exactly as one read from the store. Only in the chain when upcasters exist.
/// </summary>
internal sealed class UpcastStep(string endpoint, EventUpcasterRegistry upcasters, ConsumeStep next) : ConsumeStep
{
    public override ValueTask<ConsumeOutcome> InvokeAsync(Consumption consumption)
    {
        if (!upcasters.IsEmpty)
        {
            try
            {
                consumption.Envelope = upcasters.Upcast(consumption.Envelope);
            }
            catch (EventUpcastingException ex)
            {
                // A gap in the chain or a failing upcaster fails the same way on every attempt.
                return DecodeStep.Poison(endpoint, consumption, ex, DeadLetterCause.Undecodable);
            }
        }

        return next.InvokeAsync(consumption);
    }
}
