using System.Diagnostics;
using Herald.Diagnostics;
using Herald.Messages;
using Herald.Reliability.DeadLetters;

namespace Herald.Handling.Pipeline;

/// <summary>
/// Poison input goes to the dead letters at once, never to a retry: a delivery the transport could not decode, an invalid
/// envelope, a content type no serializer reads, a type the registry does not know, a type this endpoint has no handler for.
/// A body over <paramref name="maxBodyBytes"/> (the receive limit) is refused before any of that is read.
/// </summary>
internal sealed class DecodeStep(string endpoint, HandlerRegistry handlers, IMessageSerializer serializer, int maxBodyBytes, ConsumeStep next) : ConsumeStep
{
    public override ValueTask<ConsumeOutcome> InvokeAsync(Consumption consumption)
    {
        var delivery = consumption.Delivery;
        var envelope = consumption.Envelope;
        if (envelope.Body.Length > maxBodyBytes)
        {
            var reason = $"TooLarge: message {envelope.MessageId} has a body of {envelope.Body.Length} bytes, larger than endpoint '{endpoint}' accepts ({maxBodyBytes} bytes, HeraldOptions.MaxReceivedMessageBytes); it was not read.";
            return Poison(endpoint, consumption, new HeraldException(reason), DeadLetterCause.TooLarge);
        }

        if (delivery.DecodeFailure is { } decodeFailure)
        {
            return Poison(endpoint, consumption, decodeFailure, DeadLetterCause.Undecodable);
        }

        if (InvalidEnvelopeException.Check(envelope) is { Count: > 0 } problems)
        {
            return Poison(endpoint, consumption, new InvalidEnvelopeException(problems), DeadLetterCause.InvalidEnvelope);
        }

        if (!ContentTypes.IsJson(envelope.ContentType) && !serializer.SupportsContentType(envelope.ContentType))
        {
            var reason = $"UnsupportedContentType: the body of message {envelope.MessageId} is '{envelope.ContentType}', which neither JSON nor the registered serializer ({serializer.GetType().Name}) reads.";
            return Poison(endpoint, consumption, new HeraldException(reason), DeadLetterCause.Undecodable);
        }

        if (consumption.Type is not { } info)
        {
            return Poison(endpoint, consumption, new UnknownMessageTypeException(envelope.MessageType), DeadLetterCause.UnknownMessageType);
        }

        if (handlers.Get(info.ClrType) is not { } invoker)
        {
            var name = info.ClrType.Name;
            var reason = $"NoHandler: endpoint '{endpoint}' has no handler for message type '{envelope.MessageType}'. Implement IMessageHandler<{name}> " +
                         $"and register it with h.AddHandler<T>(); or, when another service handles it, route it to that service's queue with " +
                         $"h.Route<{name}>(\"queue\") in the sender (a send without a route goes to the sender's own endpoint).";
            return Poison(endpoint, consumption, new HeraldException(reason), DeadLetterCause.NoHandler);
        }

        consumption.Invoker = invoker;
        return next.InvokeAsync(consumption);
    }

    /// <summary>Counts a failure (not in a batch's trial decode) and marks the activity; the settle step dead-letters it as the first attempt.</summary>
    internal static ValueTask<ConsumeOutcome> Poison(string endpoint, Consumption consumption, Exception exception, DeadLetterCause cause)
    {
        if (!consumption.IsTrial)
        {
            HeraldDiagnostics.MessagesFailed.Add(1, consumption.Tags(endpoint));
        }

        consumption.Activity?.SetStatus(ActivityStatusCode.Error, exception.Message);
        return new(ConsumeOutcome.DeadLetter(exception, cause, attempt: 1, firstFailure: null));
    }
}
