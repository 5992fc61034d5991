using Herald.Handling;
using Herald.Persistence;
using Herald.Sagas;

namespace Orders.Fulfilment;

/// <summary>
/// Starts the fulfilment saga for every placed order with <see cref="SagaOrchestrator.StartInAsync{TData}"/>: the new
/// instance is saved in this message's unit of work (with the inbox mark, so the start is recorded exactly when the event
/// is taken) and runs in the background once that commits. The steps then run in units of work of their own, and this
/// message's transaction stays short: held open for a whole saga, it would hold back PostgreSQL's visibility horizon, and
/// with it every reader of the log. An event delivered again finds the instance and starts nothing; an instance a crash
/// interrupts is resumed by Herald's resume sweep.
/// </summary>
public sealed class StartFulfilment(SagaOrchestrator sagas, IUnitOfWork unitOfWork) : IMessageHandler<OrderPlaced>
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

        // Two copies of the event racing (two publishers) both get here; the second conflicts at its commit and its
        // retry finds the instance.
        await sagas.StartInAsync(FulfilmentSaga.Definition, message.OrderId.ToString(), data, unitOfWork, cancellationToken);
    }
}
