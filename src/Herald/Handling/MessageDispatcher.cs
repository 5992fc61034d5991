using System.Diagnostics;
using Herald.Cqrs.Validation;
using Herald.Diagnostics;
using Herald.Hosting;
using Herald.Messages;
using Herald.Transport;
using Microsoft.Extensions.Logging;

namespace Herald.Handling;

/// <summary>
/// The consuming pipeline of one endpoint: trace and metrics, decode (undecodable or unknown: dead letter at once),
/// middleware, handlers, then ack; a failure is redelivered with a growing delay until the attempts run out.
/// </summary>
internal sealed class MessageDispatcher
{
    private readonly string _endpoint;
    private readonly HeraldOptions _options;
    private readonly MessageTypeRegistry _registry;
    private readonly IMessageSerializer _serializer;
    private readonly HandlerRegistry _handlers;
    private readonly IServiceProvider _root;
    private readonly IMessageBus _bus;
    private readonly ILogger _logger;
    private readonly MessageHandlerDelegate _pipeline;

    public MessageDispatcher(
        HeraldOptions options,
        MessageTypeRegistry registry,
        IMessageSerializer serializer,
        HandlerRegistry handlers,
        IEnumerable<IMessageMiddleware> middleware,
        IServiceProvider root,
        IMessageBus bus,
        ILogger logger)
    {
        _endpoint = options.EndpointName;
        _options = options;
        _registry = registry;
        _serializer = serializer;
        _handlers = handlers;
        _root = root;
        _bus = bus;
        _logger = logger;
        _pipeline = BuildPipeline([.. middleware], root);
    }

    public async ValueTask HandleAsync(Delivery delivery, CancellationToken cancellationToken)
    {
        var envelope = delivery.Envelope;
        var started = Stopwatch.GetTimestamp();
        var tags = new TagList
        {
            { MetricNames.EndpointTag, _endpoint },
            { MetricNames.MessageTypeTag, envelope.MessageType },
        };
        using var activity = StartActivity(envelope);
        try
        {
            if (!_registry.TryGetByName(envelope.MessageType, out var info))
            {
                await DeadLetterAsync(delivery, new UnknownMessageTypeException(envelope.MessageType), tags, cancellationToken).ConfigureAwait(false);
                return;
            }

            if (_handlers.Get(info.ClrType) is not { } invoker)
            {
                var reason = $"NoHandler: endpoint '{_endpoint}' has no handler for message type '{envelope.MessageType}'. Register one with h.AddHandler<T>().";
                await DeadLetterAsync(delivery, new HeraldException(reason), tags, cancellationToken).ConfigureAwait(false);
                return;
            }

            object message;
            try
            {
                message = _serializer.Deserialize(envelope.Body, info.ClrType);
            }
            catch (MessageDeserializationException ex)
            {
                await DeadLetterAsync(delivery, ex, tags, cancellationToken).ConfigureAwait(false);
                return;
            }

            var context = new MessageContext(envelope, message, _endpoint, _root, _bus, cancellationToken) { Invoker = invoker };
            await using (context.ConfigureAwait(false))
            {
                await _pipeline(context).ConfigureAwait(false);
            }

            await delivery.AckAsync(cancellationToken).ConfigureAwait(false);
            HeraldDiagnostics.MessagesProcessed.Add(1, tags);
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            // Shutdown cancelled the handler: not a failure; the transport hands the message back unchanged.
            throw;
        }
#pragma warning disable CA1031 // Any handler failure is settled here (redelivery or dead letter); the consumer loop goes on.
        catch (Exception ex)
#pragma warning restore CA1031
        {
            HeraldDiagnostics.MessagesFailed.Add(1, tags);
            activity?.SetStatus(ActivityStatusCode.Error, ex.Message);
            activity?.AddException(ex);
            if (IsPermanent(ex) || envelope.DeliveryAttempt >= _options.MaxDeliveryAttempts)
            {
                await DeadLetterAsync(delivery, ex, tags, cancellationToken).ConfigureAwait(false);
            }
            else
            {
                var delay = RedeliveryDelay(envelope.DeliveryAttempt);
                Log.HandlerFailedWillRetry(_logger, ex, envelope.MessageId, envelope.MessageType, envelope.DeliveryAttempt, _endpoint, delay);
                await delivery.NackAsync(delay, cancellationToken).ConfigureAwait(false);
            }
        }
        finally
        {
            HeraldDiagnostics.ProcessingDuration.Record(Stopwatch.GetElapsedTime(started).TotalSeconds, tags);
        }
    }

    internal static string DescribeFailure(Exception exception) => $"{exception.GetType().Name}: {exception.Message}";

    private static bool IsPermanent(Exception exception) =>
        exception is MessageDeserializationException or UnknownMessageTypeException or ValidationException;

    private static MessageHandlerDelegate BuildPipeline(IMessageMiddleware[] middleware, IServiceProvider root)
    {
        MessageHandlerDelegate next = context => context.Invoker!.InvokeAsync(context, root);
        for (var i = middleware.Length - 1; i >= 0; i--)
        {
            var step = middleware[i];
            var following = next;
            next = context => step.InvokeAsync(context, following);
        }

        return next;
    }

    private static Activity? StartActivity(Envelope envelope)
    {
        if (!HeraldDiagnostics.ActivitySource.HasListeners())
        {
            return null;
        }

        var activity = HeraldDiagnostics.ActivitySource.StartActivity("process " + envelope.MessageType, ActivityKind.Consumer, TraceContext.Extract(envelope));
        activity?.SetTag(MetricNames.MessageTypeTag, envelope.MessageType);
        activity?.SetTag("messaging.message.id", envelope.MessageId.ToString());
        activity?.SetTag("messaging.message.conversation_id", envelope.CorrelationId);
        return activity;
    }

    private TimeSpan RedeliveryDelay(int attempt)
    {
        var factor = Math.Pow(2, Math.Max(0, attempt - 1));
        var delay = TimeSpan.FromTicks((long)Math.Min(_options.RedeliveryDelay.Ticks * factor, _options.MaxRedeliveryDelay.Ticks));
        return delay;
    }

    private async ValueTask DeadLetterAsync(Delivery delivery, Exception exception, TagList tags, CancellationToken cancellationToken)
    {
        var reason = DescribeFailure(exception);
        var envelope = delivery.Envelope;
        Log.DeadLettered(_logger, exception, envelope.MessageId, envelope.MessageType, envelope.DeliveryAttempt, _endpoint, reason);
        await delivery.DeadLetterAsync(reason, cancellationToken).ConfigureAwait(false);
        HeraldDiagnostics.MessagesDeadLettered.Add(1, tags);
    }
}
