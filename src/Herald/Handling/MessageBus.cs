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

    // In a unit of work (a handler's attempt, a command's), the bus sends as the handler's MessageContext does (issue 9).
    public ValueTask PublishAsync<TMessage>(TMessage message, DeliveryOptions? options = null, CancellationToken cancellationToken = default)
        where TMessage : notnull => DeliverAsync(this, UnitOfWorkRunner.Current, message, options, publish: true, cancellationToken);

    public ValueTask SendAsync<TMessage>(TMessage message, DeliveryOptions? options = null, CancellationToken cancellationToken = default)
        where TMessage : notnull => DeliverAsync(this, UnitOfWorkRunner.Current, message, options, publish: false, cancellationToken);

    /// <summary>
    /// How a message sent or published in <paramref name="scope"/> leaves, whether through the injected bus or a handler's
    /// <see cref="MessageContext"/>: through the scope's outbox when it has one (it leaves only if the unit of work commits,
    /// and the commit wakes the relay), else at once through <paramref name="bus"/>; either way carrying the scope's
    /// correlation, cause and user unless <paramref name="options"/> set them. Without a scope, straight to the transport.
    /// </summary>
    internal static ValueTask DeliverAsync<TMessage>(IMessageBus bus, IUnitOfWorkScope? scope, TMessage message, DeliveryOptions? options, bool publish, CancellationToken cancellationToken)
        where TMessage : notnull
    {
        options = Follow(scope, options);
        // A send racing the end of the attempt (its unit of work completing before the scope ends) leaves at once, as one after it.
        if (scope?.GetOutbox() is { } outbox && outbox is not Reliability.Outbox.Outbox { HasEnded: true })
        {
            return publish ? outbox.PublishAsync(message, options, cancellationToken) : outbox.SendAsync(message, options, cancellationToken);
        }

        if (bus is not MessageBus own)
        {
            // A bus registered in place of this one is asked to send it, as the scope stamped it.
            return publish ? bus.PublishAsync(message, options, cancellationToken) : bus.SendAsync(message, options, cancellationToken);
        }

        ArgumentNullException.ThrowIfNull(message);
        if (publish)
        {
            MessageRoutes.RefuseDestination(message.GetType(), options);
        }

        var envelope = own._envelopes.Create(message, options?.CorrelationId, options?.CausationId, options?.UserId, options?.PartitionKey, options?.Headers);
        var destination = publish ? envelope.MessageType : own._routes.SendDestination(message.GetType(), options, own._defaultQueue);
        return own.DispatchAsync(envelope, destination, publish, options, cancellationToken);
    }

    // Unset, the correlation, cause and user are those of the scope (the command sent over HTTP, the handled message).
    private static DeliveryOptions? Follow(IUnitOfWorkScope? scope, DeliveryOptions? options)
    {
        if (scope is null)
        {
            return options;
        }

        var ambient = scope.Metadata;
        options ??= DeliveryOptions.Default;
        return options with
        {
            CorrelationId = options.CorrelationId ?? ambient.CorrelationId,
            CausationId = options.CausationId ?? ambient.CausationId,
            UserId = options.UserId ?? ambient.UserId,
        };
    }

    // Pooled: it goes asynchronous whenever the queue or broker makes the sender wait, once per message under load.
    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder))]
    private async ValueTask DispatchAsync(Envelope envelope, string destination, bool publish, DeliveryOptions? options, CancellationToken cancellationToken)
    {
        // A traceparent the caller set (a context forwarded from another system) is kept, and the send's span joins its trace.
        using var activity = HeraldDiagnostics.ActivitySource.HasListeners()
            ? HeraldDiagnostics.ActivitySource.StartActivity(publish ? "publish " + destination : "send " + destination, ActivityKind.Producer, TraceContext.SetBy(envelope.Headers))
            : null;
        if (activity is not null)
        {
            activity.SetTag(MetricNames.DestinationTag, destination);
            activity.SetTag(MetricNames.MessageTypeTag, envelope.MessageType);
            activity.SetTag("messaging.message.id", envelope.MessageId.ToString());
            envelope = TraceContext.InjectUnlessSet(envelope, activity);
        }
        else
        {
            // Nothing listens to Herald here, but the caller's trace (an ASP.NET Core request's) goes on with the message, as
            // through the outbox: a service downstream that listens continues it. No W3C activity: nothing is allocated.
            envelope = TraceContext.InjectUnlessSet(envelope, Activity.Current);
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

        HeraldDiagnostics.Published(destination, envelope);
    }
}
