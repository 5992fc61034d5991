using System.Runtime.CompilerServices;
using Herald.Transport;

namespace Herald.Handling.Pipeline;

/// <summary>
/// The consuming chain of one endpoint, built once by <see cref="EndpointPipelineFactory"/>: trace and metrics, settle,
/// decode, upcast, deserialize, retries, then per attempt the unit of work, inbox and handlers. Its
/// <see cref="HandleAsync"/> is the transport's <see cref="DeliveryHandler"/>.
/// </summary>
/// <remarks>
/// It keeps no delivery once <see cref="HandleAsync"/> returned (the consumption is cleared, a context forgets it when
/// disposed), so a transport may reuse the delivery object.
/// </remarks>
internal sealed class EndpointPipeline(string endpoint, ConsumeStep head) : IForgetsDeliveries
{
    // One per thread, handed back after each delivery: the chain's state costs no allocation per message.
    [ThreadStatic]
    private static Consumption? t_spare;

    public string Endpoint => endpoint;

    // Pooled: it goes asynchronous whenever the handler does.
    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder))]
    public async ValueTask HandleAsync(Delivery delivery, CancellationToken cancellationToken)
    {
        var consumption = t_spare ?? new Consumption();
        t_spare = null;
        consumption.Start(delivery, cancellationToken);
        try
        {
            await head.InvokeAsync(consumption).ConfigureAwait(false);
        }
        finally
        {
            consumption.Clear();
            t_spare = consumption;
        }
    }
}
