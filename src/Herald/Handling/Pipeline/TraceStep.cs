using System.Diagnostics;
using Herald.Diagnostics;
using Herald.EventSourcing.Upcasting;
using Herald.Messages;

namespace Herald.Handling.Pipeline;

/// <summary>
/// The first step: the message-type tag, the consumer activity, and the processing duration of everything after it. A type
/// stored under a former name (renamed by <paramref name="upcasters"/>) is identified by its current name.
/// </summary>
internal sealed class TraceStep(string endpoint, MessageTypeRegistry registry, EventUpcasterRegistry? upcasters, ConsumeStep next) : ConsumeStep
{
    // The message-type tag of a message whose type the registry does not know.
    private const string UnregisteredType = "unknown";

    public override async ValueTask<ConsumeOutcome> InvokeAsync(Consumption consumption)
    {
        var envelope = consumption.Envelope;
        var started = Stopwatch.GetTimestamp();
        Identify(registry, upcasters, consumption);
        using var activity = StartActivity(envelope, consumption.TypeTag);
        consumption.Activity = activity;
        try
        {
            return await next.InvokeAsync(consumption).ConfigureAwait(false);
        }
        finally
        {
            HeraldDiagnostics.ProcessingDuration.Record(Stopwatch.GetElapsedTime(started).TotalSeconds, consumption.Tags(endpoint));
        }
    }

    /// <summary>Looks up the envelope's registered type and its metric tag, which the steps after this one read.</summary>
    internal static void Identify(MessageTypeRegistry registry, EventUpcasterRegistry? upcasters, Consumption consumption)
    {
        // A null type (an adapter's salvage of a broken message) is unknown, not a crash of the chain: the decode step dead-letters it (issue 10).
        // The envelope keeps its stored name here: the upcast step renames it, with the body migrations of the type.
        MessageTypeInfo? known = null;
        consumption.Type = consumption.Envelope.MessageType is { } name && registry.TryGetByName(upcasters?.CurrentName(name) ?? name, out known) ? known : null;
        consumption.TypeTag = known?.Name ?? UnregisteredType;
    }

    private static Activity? StartActivity(Envelope envelope, string messageType)
    {
        if (!HeraldDiagnostics.ActivitySource.HasListeners())
        {
            return null;
        }

        var activity = HeraldDiagnostics.ActivitySource.StartActivity("process " + messageType, ActivityKind.Consumer, TraceContext.Extract(envelope));
        activity?.SetTag(MetricNames.MessageTypeTag, messageType);
        activity?.SetTag("messaging.message.id", envelope.MessageId.ToString());
        activity?.SetTag("messaging.message.conversation_id", envelope.CorrelationId);
        return activity;
    }
}
