using System.Diagnostics;
using System.Text.Json;
using Herald.Handling;
using Herald.Persistence;
using Herald.Sagas;

namespace Orders.Fulfilment;

/// <summary>
/// Starts the fulfilment saga for every placed order: saves its instance in this message's unit of work (with the inbox
/// mark, so the start is recorded exactly when the event is taken), and hands it to the <see cref="FulfilmentRunner"/>
/// once that commits. The steps then run in units of work of their own, and this message's transaction stays short: held
/// open for a whole saga, it would hold back PostgreSQL's visibility horizon, and with it every reader of the log.
/// </summary>
public sealed class StartFulfilment(ISagaStore sagas, IUnitOfWork unitOfWork, FulfilmentRunner runner) : IMessageHandler<OrderPlaced>
{
    // The saga store keeps an instance's data as JSON with the web defaults, as the orchestrator reads it.
    private static readonly JsonSerializerOptions Json = new(JsonSerializerDefaults.Web);

    public async ValueTask HandleAsync(OrderPlaced message, MessageContext context, CancellationToken cancellationToken)
    {
        var id = message.OrderId.ToString();
        var existing = await sagas.LoadAsync(FulfilmentSaga.Name, id, cancellationToken);
        if (existing is { IsFinished: true })
        {
            return;
        }

        if (existing is null)
        {
            var data = new FulfilmentData
            {
                OrderId = message.OrderId,
                CustomerId = message.CustomerId,
                Lines = [.. message.Lines],
                Total = message.Total,
                CorrelationId = context.Envelope.CorrelationId,
            };
            // Two copies of the event racing (two publishers) both get here; the second conflicts at its commit and
            // its retry finds the instance.
            await sagas.SaveAsync(
                new SagaInstance
                {
                    SagaType = FulfilmentSaga.Name,
                    Id = id,
                    Status = SagaStatus.Running,
                    State = FulfilmentSaga.Definition.Steps[0].Name,
                    CurrentStep = 0,
                    Data = JsonSerializer.SerializeToUtf8Bytes(data, Json),
                },
                unitOfWork,
                cancellationToken);
        }

        var parent = Activity.Current?.Context ?? default;
        unitOfWork.OnCommitted(token => runner.EnqueueAsync(id, parent, token));
    }
}
