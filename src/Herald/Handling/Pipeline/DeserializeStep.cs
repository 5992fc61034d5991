using Herald.EventSourcing.Upcasting;
using Herald.Messages;
using Herald.Reliability.DeadLetters;

namespace Herald.Handling.Pipeline;

/// <summary>Reads the body into the message type; a body that cannot be read is dead-lettered, never retried.</summary>
internal sealed class DeserializeStep(string endpoint, IMessageSerializer serializer, ConsumeStep next) : ConsumeStep
{
    public override ValueTask<ConsumeOutcome> InvokeAsync(Consumption consumption)
    {
        var envelope = consumption.Envelope;
        var type = consumption.Type!;
        if (RegisteredVersionCheck.Behind(envelope, type) is { } behind)
        {
            // After the upcast step: nothing migrates it, and reading it as the current shape would lose what changed.
            return DecodeStep.Poison(endpoint, consumption, behind, DeadLetterCause.Undecodable);
        }

        try
        {
            consumption.Message = serializer.Deserialize(envelope.Body, type.ClrType);
        }
        catch (Exception ex) when (ex is not OperationCanceledException || !consumption.CancellationToken.IsCancellationRequested)
        {
            // Nothing from the wire is trusted: whatever a serializer or the message type's own constructor throws, the
            // body is undecodable, and running it again would throw again.
            var undecodable = ex as MessageDeserializationException ?? new MessageDeserializationException(envelope.MessageType, ex);
            return DecodeStep.Poison(endpoint, consumption, undecodable, DeadLetterCause.Undecodable);
        }

        return next.InvokeAsync(consumption);
    }
}
