using Herald.Handling;
using Herald.Reliability.Outbox;
using Microsoft.Extensions.DependencyInjection;

namespace Herald.Sagas;

/// <summary>
/// What a saga step (or its compensation) runs with: the saga's data, the step's idempotency key, and the services of
/// the step's own scope, whose unit of work commits the step's writes together with the saga's progress.
/// </summary>
/// <typeparam name="TData">The saga's data.</typeparam>
public sealed class SagaStepContext<TData>
    where TData : class
{
    internal SagaStepContext(string sagaName, string sagaId, string stepName, bool isCompensation, int attempt, TData data, IServiceProvider services, CancellationToken cancellationToken)
    {
        SagaName = sagaName;
        SagaId = sagaId;
        StepName = stepName;
        IsCompensation = isCompensation;
        Attempt = attempt;
        Data = data;
        Services = services;
        CancellationToken = cancellationToken;
        IdempotencyKey = SagaDefinition.StepKey(sagaName, sagaId, stepName, isCompensation);
    }

    /// <summary>The saga's name.</summary>
    public string SagaName { get; }

    /// <summary>The instance's id.</summary>
    public string SagaId { get; }

    /// <summary>The step's name.</summary>
    public string StepName { get; }

    /// <summary>True while the step's compensation runs.</summary>
    public bool IsCompensation { get; }

    /// <summary>Which run of the step this is in this process, from 1 (a resumed saga starts counting again).</summary>
    public int Attempt { get; }

    /// <summary>
    /// A key that is the same every time this step (or its compensation) of this instance runs, including after a crash:
    /// pass it to an external service or <c>IdempotencyService</c> so a re-run has no second effect.
    /// </summary>
    public string IdempotencyKey { get; }

    /// <summary>The saga's data; changes made to it are saved when the step completes, and dropped when it fails.</summary>
    public TData Data { get; set; }

    /// <summary>The services of the step's scope.</summary>
    public IServiceProvider Services { get; }

    /// <summary>Fires when the step's timeout passes or the host stops.</summary>
    public CancellationToken CancellationToken { get; }

    /// <summary>
    /// Sends a command, correlated to the saga (correlation id = saga id, causation id = the idempotency key). Through the
    /// outbox when one is configured, so it leaves only if the step commits; else straight to the transport.
    /// </summary>
    public ValueTask SendAsync<TMessage>(TMessage message, DeliveryOptions? options = null)
        where TMessage : notnull =>
        Services.GetService<IOutbox>() is { } outbox
            ? outbox.SendAsync(message, Correlate(options), CancellationToken)
            : Services.GetRequiredService<IMessageBus>().SendAsync(message, Correlate(options), CancellationToken);

    /// <summary>Publishes an event, correlated to the saga as <see cref="SendAsync{TMessage}"/> does.</summary>
    public ValueTask PublishAsync<TMessage>(TMessage message, DeliveryOptions? options = null)
        where TMessage : notnull =>
        Services.GetService<IOutbox>() is { } outbox
            ? outbox.PublishAsync(message, Correlate(options), CancellationToken)
            : Services.GetRequiredService<IMessageBus>().PublishAsync(message, Correlate(options), CancellationToken);

    private DeliveryOptions Correlate(DeliveryOptions? options) =>
        (options ?? DeliveryOptions.Default) with
        {
            CorrelationId = options?.CorrelationId ?? SagaId,
            CausationId = options?.CausationId ?? IdempotencyKey,
        };
}
