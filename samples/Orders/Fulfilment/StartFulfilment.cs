using System.Diagnostics;
using Herald.Handling;
using Herald.Sagas;
using Microsoft.Extensions.Logging;

namespace Orders.Fulfilment;

/// <summary>Starts the fulfilment saga for every placed order (a redelivered event resumes the instance it started).</summary>
public sealed class StartFulfilment(SagaOrchestrator orchestrator, ILogger<StartFulfilment> logger) : IMessageHandler<OrderPlaced>
{
    public async ValueTask HandleAsync(OrderPlaced message, MessageContext context, CancellationToken cancellationToken)
    {
        var data = new FulfilmentData
        {
            OrderId = message.OrderId,
            CustomerId = message.CustomerId,
            Lines = [.. message.Lines],
            Total = message.Total,
            CorrelationId = context.Envelope.CorrelationId,
        };
        var parent = Activity.Current?.Context ?? default;
        var id = message.OrderId.ToString();

        // Each step commits in a unit of work of its own, so the saga runs outside this message's unit of work (which would
        // otherwise swallow every step's writes into one commit): the flow of the ambient unit of work is not carried over,
        // only the trace is.
        Task run;
        using (ExecutionContext.SuppressFlow())
        {
            run = Task.Run(
                async () =>
                {
                    using var activity = OrdersTelemetry.Source.StartActivity("order-fulfilment", ActivityKind.Internal, parent);
                    activity?.SetTag("order.id", id);
                    SagaInstance? ended;
                    try
                    {
                        ended = await orchestrator.StartAsync(FulfilmentSaga.Definition, id, data, cancellationToken);
                    }
                    catch (SagaConcurrencyException)
                    {
                        // Started before (a redelivery, or another instance's publisher sent the event too): run on from where it stands.
                        ended = await orchestrator.ResumeAsync(FulfilmentSaga.Definition, id, cancellationToken);
                    }

                    logger.LogInformation("fulfilment {OrderId} ({CorrelationId}): {Status} {Error}", id, data.CorrelationId, ended?.Status, ended?.Error);
                },
                cancellationToken);
        }

        await run;
    }
}
