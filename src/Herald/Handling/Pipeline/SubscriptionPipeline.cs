using System.Runtime.ExceptionServices;
using Herald.EventSourcing;
using Herald.Internal;
using Herald.Projections;
using Herald.Transport;
using Microsoft.Extensions.Logging;

namespace Herald.Handling.Pipeline;

/// <summary>
/// Runs each event of an <see cref="EventSourcing.Subscriptions.EventSubscription"/> through an endpoint's chain, as a transport
/// runs its deliveries: decode, upcast, retries, unit of work (with the checkpoint), handlers, settle. A poison event is
/// dead-lettered and the subscription moves on; a redelivery the retry policy asks for waits here, in process. A write of a
/// retired read-model generation stops the subscription instead: no retry can succeed, and its projection's runner starts
/// again on the generation that serves.
/// </summary>
internal sealed class SubscriptionPipeline
{
    private readonly EndpointPipeline _pipeline;
    private readonly DeliveryHandler _handle;
    private readonly TimeProvider _timeProvider;
    private readonly ILogger _logger;
    private readonly ProjectionRetryWaits? _retryWaits;

    // A projection's events note their waits for a delayed retry in retryWaits, so a test's fake clock finds them.
    public SubscriptionPipeline(EndpointPipeline pipeline, string subscriptionId, TimeProvider timeProvider, ILogger logger, ProjectionRetryWaits? retryWaits = null)
    {
        _retryWaits = retryWaits;
        _pipeline = pipeline;
        SubscriptionId = subscriptionId;
        _handle = HandleOrStopAsync;
        _timeProvider = timeProvider;
        _logger = logger;
    }

    /// <summary>The subscription whose events it runs.</summary>
    public string SubscriptionId { get; }

    public async ValueTask HandleAsync(RecordedEvent recorded, CancellationToken cancellationToken)
    {
        var envelope = recorded.Envelope;
        for (var delivered = 1; ; delivered++)
        {
            // Numbered as a transport numbers its deliveries, so the retry policy counts attempts the same way.
            var delivery = new RecordedEventDelivery(envelope with { DeliveryAttempt = delivered }, _pipeline.Endpoint, SubscriptionId, recorded.Stream, recorded.Position);
            if (!await DeliverySettlement.RunAsync(_handle, delivery, _logger, cancellationToken).ConfigureAwait(false))
            {
                // Stopped in the middle: the event is not done, and the checkpoint stays before it.
                cancellationToken.ThrowIfCancellationRequested();
            }

            if (delivery.Retired is { } retired)
            {
                ExceptionDispatchInfo.Throw(retired);
            }

            if (delivery.RedeliveryDelay is not { } delay)
            {
                return;
            }

            if (delay > TimeSpan.Zero)
            {
                await (_retryWaits?.DelayAsync(_pipeline.Endpoint, delay, _timeProvider, cancellationToken)
                    ?? Task.Delay(delay, _timeProvider, cancellationToken)).ConfigureAwait(false);
            }

            if (delivery.RedeliveryHeaders is { } headers)
            {
                envelope = envelope.WithHeaders(headers);
            }
        }
    }

    // The settlement would nack the refused event for a run again at once, forever: it is marked here, and thrown above.
    private async ValueTask HandleOrStopAsync(Delivery delivery, CancellationToken cancellationToken)
    {
        try
        {
            await _pipeline.HandleAsync(delivery, cancellationToken).ConfigureAwait(false);
        }
        catch (ReadModelGenerationRetiredException retired)
        {
            ((RecordedEventDelivery)delivery).Retired = retired;
            throw;
        }
    }
}
