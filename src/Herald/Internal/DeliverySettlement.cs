using System.Runtime.CompilerServices;
using Herald.Hosting;
using Herald.Transport;
using Microsoft.Extensions.Logging;

namespace Herald.Internal;

/// <summary>
/// Ack on return and nack on throw, once for every transport: a consumer runs each delivery through
/// <see cref="RunAsync(DeliveryHandler, Delivery, ILogger, CancellationToken)"/> instead of settling it itself.
/// </summary>
/// <remarks>An extension point for Herald's adapter packages, not for application code; it may change in any release.</remarks>
public static class DeliverySettlement
{
    /// <summary>
    /// Runs <paramref name="handler"/> on <paramref name="delivery"/> and settles what it left unsettled: ack when it returned;
    /// when it threw, a delivery the transport could not decode goes to the transport's dead letters (it would fail the same
    /// way again) and any other is nacked for redelivery at once. A failed settlement is logged; the transport brings the
    /// message back. Returns false, leaving the delivery unsettled, when the handler threw after <paramref name="aborting"/>
    /// fired: shutdown aborted it, which is not a failed attempt, and the consumer hands it back unchanged.
    /// </summary>
    public static ValueTask<bool> RunAsync(DeliveryHandler handler, Delivery delivery, ILogger logger, CancellationToken aborting) =>
        RunAsync(handler, delivery, logger, aborting, aborting);

    /// <summary>
    /// As <see cref="RunAsync(DeliveryHandler, Delivery, ILogger, CancellationToken)"/>, but the handler runs with
    /// <paramref name="handlerToken"/>, which may fire for more than shutdown (a lease found lost): a handler it cancels
    /// while <paramref name="aborting"/> has not fired counts as failed and is nacked, and the transport decides whether
    /// that settlement still applies.
    /// </summary>
    // Pooled: it runs once per delivery on every transport, and goes asynchronous whenever the handler does.
    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder<>))]
    public static async ValueTask<bool> RunAsync(DeliveryHandler handler, Delivery delivery, ILogger logger, CancellationToken aborting, CancellationToken handlerToken)
    {
        ArgumentNullException.ThrowIfNull(handler);
        ArgumentNullException.ThrowIfNull(delivery);
        ArgumentNullException.ThrowIfNull(logger);
        try
        {
            await handler(delivery, handlerToken).ConfigureAwait(false);
            if (!delivery.IsSettled)
            {
                await delivery.AckAsync(CancellationToken.None).ConfigureAwait(false);
            }

            return true;
        }
#pragma warning disable CA1031 // A handler failure must never stop the consumer: the message goes back to the queue.
        catch (Exception e)
#pragma warning restore CA1031
        {
            // Settled already (by the handler, or by the ack that threw): the transport brings it back if the settlement
            // did not complete. Logged, so a failed settlement is never silent.
            if (delivery.IsSettled)
            {
                Log.SettledThenFailed(logger, e, delivery.Envelope.MessageId, delivery.Queue);
                return true;
            }

            if (aborting.IsCancellationRequested)
            {
                return false;
            }

            try
            {
                await (delivery.DecodeFailure is { } failure
                    ? delivery.DeadLetterAsync(failure.Message, CancellationToken.None)
                    : delivery.NackAsync(TimeSpan.Zero, CancellationToken.None)).ConfigureAwait(false);
            }
#pragma warning disable CA1031 // Logged; a failed settlement hands the delivery back (or its lease runs out).
            catch (Exception ex)
#pragma warning restore CA1031
            {
                Log.SettleFailed(logger, ex, delivery.Envelope.MessageId, delivery.Queue);
            }

            return true;
        }
    }
}
