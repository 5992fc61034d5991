using System.Diagnostics;
using System.Runtime.CompilerServices;
using Herald.Diagnostics;
using Herald.Hosting;
using Herald.Messages;
using Herald.Persistence;
using Herald.Transport;
using Microsoft.Extensions.Options;

namespace Herald.Handling;

internal sealed class MessageBus : IMessageBus
{
    private readonly ITransport _transport;
    private readonly EnvelopeFactory _envelopes;
    private readonly MessageRoutes _routes;
    private readonly string _defaultQueue;

    public MessageBus(ITransport transport, EnvelopeFactory envelopes, MessageRoutes routes, IOptions<HeraldOptions> options)
    {
        _transport = transport;
        _envelopes = envelopes;
        _routes = routes;
        _defaultQueue = options.Value.EndpointName;
    }

    public ValueTask PublishAsync<TMessage>(TMessage message, DeliveryOptions? options = null, CancellationToken cancellationToken = default)
        where TMessage : notnull
    {
        var envelope = Create(message, options);
        return DispatchAsync(envelope, envelope.MessageType, publish: true, options, cancellationToken);
    }

    public ValueTask SendAsync<TMessage>(TMessage message, DeliveryOptions? options = null, CancellationToken cancellationToken = default)
        where TMessage : notnull
    {
        var envelope = Create(message, options);
        var queue = _routes.GetQueue(message.GetType()) ?? _defaultQueue;
        return DispatchAsync(envelope, queue, publish: false, options, cancellationToken);
    }

    // Unset, the correlation, cause and user are those of the running unit of work (the command sent over HTTP, the handled message).
    private Envelope Create(object message, DeliveryOptions? options)
    {
        var ambient = UnitOfWorkRunner.Current?.Metadata;
        return _envelopes.Create(
            message,
            options?.CorrelationId ?? ambient?.CorrelationId,
            options?.CausationId ?? ambient?.CausationId,
            options?.UserId ?? ambient?.UserId,
            options?.PartitionKey,
            options?.Headers);
    }

    // Pooled: it goes asynchronous whenever the queue or broker makes the sender wait, once per message under load.
    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder))]
    private async ValueTask DispatchAsync(Envelope envelope, string destination, bool publish, DeliveryOptions? options, CancellationToken cancellationToken)
    {
        using var activity = HeraldDiagnostics.ActivitySource.HasListeners()
            ? HeraldDiagnostics.ActivitySource.StartActivity(publish ? "publish " + destination : "send " + destination, ActivityKind.Producer)
            : null;
        if (activity is not null)
        {
            activity.SetTag(MetricNames.DestinationTag, destination);
            activity.SetTag(MetricNames.MessageTypeTag, envelope.MessageType);
            activity.SetTag("messaging.message.id", envelope.MessageId.ToString());
            envelope = TraceContext.Inject(envelope, activity);
        }

        var sendOptions = options?.Delay is { } delay ? new SendOptions { Delay = delay } : null;
        try
        {
            if (publish)
            {
                await _transport.PublishAsync(destination, envelope, sendOptions, cancellationToken).ConfigureAwait(false);
            }
            else
            {
                await _transport.SendAsync(destination, envelope, sendOptions, cancellationToken).ConfigureAwait(false);
            }
        }
        catch (Exception ex)
        {
            activity?.SetStatus(ActivityStatusCode.Error, ex.Message);
            throw;
        }

        HeraldDiagnostics.MessagesPublished.Add(1, new KeyValuePair<string, object?>(MetricNames.MessageTypeTag, envelope.MessageType));
    }
}
