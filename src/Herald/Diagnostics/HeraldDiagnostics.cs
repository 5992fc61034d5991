using System.Diagnostics;
using System.Diagnostics.Metrics;
using Herald.Messages;
using Herald.Reliability.DeadLetters;
using Herald.Reliability.Outbox;

namespace Herald.Diagnostics;

/// <summary>
/// The one <see cref="ActivitySource"/> and the one <see cref="Meter"/> of Herald, both named "Herald".
/// Wire them into OpenTelemetry with <c>AddSource("Herald")</c> and <c>AddMeter("Herald")</c>.
/// </summary>
public static class HeraldDiagnostics
{
    /// <summary>The name of the activity source and of the meter.</summary>
    public const string Name = "Herald";

    /// <summary>Spans for send and publish, for processing a delivery (or a projection's batch), and for a saga run in the background.</summary>
    public static ActivitySource ActivitySource { get; } = new(Name, typeof(HeraldDiagnostics).Assembly.GetName().Version?.ToString());

    /// <summary>Counters and histograms of message processing.</summary>
    public static Meter Meter { get; } = new(Name, typeof(HeraldDiagnostics).Assembly.GetName().Version?.ToString());

    internal static Counter<long> MessagesPublished { get; } =
        Meter.CreateCounter<long>(MetricNames.MessagesPublished, "{message}", "Messages a transport took: sent or published at once, by the outbox relay, by the stored-event publisher, or retried from the dead letters.");

    internal static Counter<long> MessagesProcessed { get; } =
        Meter.CreateCounter<long>(MetricNames.MessagesProcessed, "{message}", "Messages handled successfully.");

    internal static Counter<long> MessagesFailed { get; } =
        Meter.CreateCounter<long>(MetricNames.MessagesFailed, "{message}", "Handling attempts that failed (each failed attempt counts).");

    internal static Counter<long> MessagesDeadLettered { get; } =
        Meter.CreateCounter<long>(MetricNames.MessagesDeadLettered, "{message}", "Messages moved to the dead letters.");

    internal static Counter<long> MessagesRetried { get; } =
        Meter.CreateCounter<long>(MetricNames.MessagesRetried, "{attempt}", "Failed attempts that are retried, immediately or by a delayed redelivery.");

    internal static Counter<long> MessagesDuplicate { get; } =
        Meter.CreateCounter<long>(MetricNames.MessagesDuplicate, "{message}", "Duplicate deliveries the inbox acked without running handlers.");

    internal static Counter<long> DeadLetterAlerts { get; } =
        Meter.CreateCounter<long>(MetricNames.DeadLetterAlerts, "{alert}", "Endpoints whose dead letters reached the alert threshold.");

    internal static ObservableGauge<long> DeadLetters { get; } =
        Meter.CreateObservableGauge(MetricNames.DeadLetters, DeadLetterMonitor.Observe, "{message}", "Dead letters held per endpoint.");

    internal static Counter<long> OutboxSent { get; } =
        Meter.CreateCounter<long>(MetricNames.OutboxSent, "{message}", "Messages the outbox relay sent.");

    internal static Counter<long> OutboxSendFailures { get; } =
        Meter.CreateCounter<long>(MetricNames.OutboxSendFailures, "{message}", "Outbox sends that failed and are retried.");

    internal static ObservableGauge<long> OutboxPending { get; } =
        Meter.CreateObservableGauge(MetricNames.OutboxPending, OutboxRelay.Observe, "{message}", "Messages waiting in the outbox.");

    internal static Counter<long> LeasesLost { get; } =
        Meter.CreateCounter<long>(MetricNames.LeasesLost, "{lease}", "Leases, locks and pending marks lost while their work ran; the work was cancelled and its completion refused.");

    internal static Histogram<double> ProcessingDuration { get; } =
        Meter.CreateHistogram<double>(MetricNames.ProcessingDuration, "s", "Time to handle one delivery, from decode to settle.");

    internal static ObservableGauge<long> ProjectionLag { get; } =
        Meter.CreateObservableGauge(MetricNames.ProjectionLag, Projections.ProjectionManager.Observe, "{event}", "Positions an async projection is behind the head of the global log.");

    /// <summary>
    /// Counts <paramref name="envelope"/> on <see cref="MessagesPublished"/> once the transport took it for <paramref name="destination"/>,
    /// whoever sent it (the bus at once, the outbox relay, the stored-event publisher, a dead letter's retry), so each counts once.
    /// </summary>
    internal static void Published(string destination, Envelope envelope) =>
        MessagesPublished.Add(
            1,
            new KeyValuePair<string, object?>(MetricNames.MessageTypeTag, envelope.MessageType),
            new KeyValuePair<string, object?>(MetricNames.DestinationTag, destination));

    /// <summary>Marks <paramref name="activity"/> failed by <paramref name="failure"/>: status Error with its message, and the exception as an event.</summary>
    internal static void Failed(Activity? activity, Exception failure)
    {
        activity?.SetStatus(ActivityStatusCode.Error, failure.Message);
        activity?.AddException(failure);
    }
}
