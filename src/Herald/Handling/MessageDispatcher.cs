using Herald.Persistence;
using System.Diagnostics;
using Herald.Diagnostics;
using Herald.Hosting;
using Herald.Messages;
using Herald.Reliability;
using Herald.Reliability.DeadLetters;
using Herald.Reliability.Inbox;
using Herald.Reliability.Outbox;
using Herald.Reliability.Retry;
using Herald.Transport;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace Herald.Handling;

/// <summary>
/// The consuming pipeline of one endpoint: trace and metrics; poison input (an invalid envelope, an unknown type, no
/// handler, an undecodable body) to the dead letters at once; then per attempt a scope and unit of work, the inbox
/// (duplicates are acked without running handlers), middleware and handlers, and the commit. A failed attempt follows
/// the retry policy: run again at once, redeliver after a delay through the transport (the first-failure time travels in
/// a header), or dead-letter. A dead letter is written to the store before the delivery is acked; if the store fails, it
/// goes to the transport's own dead letters with its record in headers (drained into the store later), and only if that
/// fails too is it redelivered, never lost. Dead-letter alerting is only signalled from here and runs in the background.
/// </summary>
internal sealed class MessageDispatcher
{
    // The message-type tag of a message whose type the registry does not know.
    private const string UnregisteredType = "(unregistered)";

    private readonly string _endpoint;
    private readonly MessageTypeRegistry _registry;
    private readonly IMessageSerializer _serializer;
    private readonly HandlerRegistry _handlers;
    private readonly IServiceProvider _root;
    private readonly IMessageBus _bus;
    private readonly ILogger _logger;
    private readonly MessageHandlerDelegate _pipeline;
    private readonly RetryPolicies _retries;
    private readonly IDeadLetterStore _deadLetters;
    private readonly DeadLetterMonitor? _monitor;
    private readonly DeadLetterOptions _deadLetterOptions;
    private readonly bool _nativeDeadLetters;
    private readonly InboxStep? _inbox;
    private readonly bool _useOutbox;
    private readonly TimeProvider _timeProvider;

    public MessageDispatcher(string endpoint, IServiceProvider root, ILogger logger)
    {
        _endpoint = endpoint;
        _root = root;
        _logger = logger;
        _registry = root.GetRequiredService<MessageTypeRegistry>();
        _serializer = root.GetRequiredService<IMessageSerializer>();
        _handlers = root.GetRequiredService<HandlerRegistry>();
        _bus = root.GetRequiredService<IMessageBus>();
        _retries = root.GetRequiredService<RetryPolicies>();
        _deadLetters = root.GetRequiredService<IDeadLetterStore>();
        _monitor = root.GetService<DeadLetterMonitor>();
        _deadLetterOptions = root.GetRequiredService<IOptions<DeadLetterOptions>>().Value;
        // Only dead letters a drain can move back into the store are a fallback; others would be stranded out of sight.
        _nativeDeadLetters = root.GetService<ITransport>() is { Capabilities.SupportsNativeDeadLetter: true } and INativeDeadLetterSource;
        _timeProvider = root.GetRequiredService<TimeProvider>();
        _inbox = root.GetService<InboxStep>() is { } inbox && inbox.IsEnabledFor(endpoint) ? inbox : null;
        _useOutbox = root.GetService<IOptions<OutboxOptions>>() is { } outbox && root.GetService<OutboxRelay>() is not null && outbox.Value.RouteHandlerMessages;
        _pipeline = BuildPipeline([.. root.GetServices<IMessageMiddleware>()], root);
    }

    public async ValueTask HandleAsync(Delivery delivery, CancellationToken cancellationToken)
    {
        var envelope = delivery.Envelope;
        var started = Stopwatch.GetTimestamp();

        // The wire's type names only what the registry knows: any other value would give metrics unbounded cardinality (issue 10).
        var messageType = _registry.TryGetByName(envelope.MessageType, out var known) ? known.Name : UnregisteredType;
        var tags = new TagList
        {
            { MetricNames.EndpointTag, _endpoint },
            { MetricNames.MessageTypeTag, messageType },
        };
        using var activity = StartActivity(envelope, messageType);
        try
        {
            await DispatchAsync(delivery, tags, activity, cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            HeraldDiagnostics.ProcessingDuration.Record(Stopwatch.GetElapsedTime(started).TotalSeconds, tags);
        }
    }

    internal static string DescribeFailure(Exception exception) => $"{exception.GetType().Name}: {exception.Message}";

    private async ValueTask DispatchAsync(Delivery delivery, TagList tags, Activity? activity, CancellationToken cancellationToken)
    {
        var envelope = delivery.Envelope;
        if (delivery.DecodeFailure is { } decodeFailure)
        {
            await PoisonAsync(delivery, decodeFailure, DeadLetterCause.Undecodable, tags, activity, cancellationToken).ConfigureAwait(false);
            return;
        }

        if (InvalidEnvelopeException.Check(envelope) is { Count: > 0 } problems)
        {
            await PoisonAsync(delivery, new InvalidEnvelopeException(problems), DeadLetterCause.InvalidEnvelope, tags, activity, cancellationToken).ConfigureAwait(false);
            return;
        }

        if (!_registry.TryGetByName(envelope.MessageType, out var info))
        {
            await PoisonAsync(delivery, new UnknownMessageTypeException(envelope.MessageType), DeadLetterCause.UnknownMessageType, tags, activity, cancellationToken).ConfigureAwait(false);
            return;
        }

        if (_handlers.Get(info.ClrType) is not { } invoker)
        {
            var reason = $"NoHandler: endpoint '{_endpoint}' has no handler for message type '{envelope.MessageType}'. Register one with h.AddHandler<T>().";
            await PoisonAsync(delivery, new HeraldException(reason), DeadLetterCause.NoHandler, tags, activity, cancellationToken).ConfigureAwait(false);
            return;
        }

        object message;
        try
        {
            message = _serializer.Deserialize(envelope.Body, info.ClrType);
        }
        catch (Exception ex) when (ex is not OperationCanceledException || !cancellationToken.IsCancellationRequested)
        {
            // Nothing from the wire is trusted: whatever a serializer or the message type's own constructor throws, the
            // body is undecodable, and running it again would throw again.
            var undecodable = ex as MessageDeserializationException ?? new MessageDeserializationException(envelope.MessageType, ex);
            await PoisonAsync(delivery, undecodable, DeadLetterCause.Undecodable, tags, activity, cancellationToken).ConfigureAwait(false);
            return;
        }

        // Attempts count as documented on RetryPolicy: the first delivery holds attempt 1 and the immediate retries;
        // every redelivery (counted by the transport) is one more attempt.
        var policy = _retries.Get(_endpoint, info.ClrType);
        var delivered = Math.Max(1, envelope.DeliveryAttempt);
        var attempt = delivered == 1 ? 1 : policy.ImmediateRetries + delivered;
        DateTimeOffset? firstFailure = null;
        while (true)
        {
            Exception? failure = null;
            var handled = false;
            try
            {
                handled = await RunAttemptAsync(envelope, message, invoker, attempt, cancellationToken).ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
            {
                // Shutdown cancelled the handler: not a failure; the transport hands the message back unchanged.
                throw;
            }
#pragma warning disable CA1031 // Any handler failure is settled here (retry, redelivery or dead letter); the consumer loop goes on.
            catch (Exception ex)
#pragma warning restore CA1031
            {
                failure = ex;
            }

            if (failure is null)
            {
                if (!handled)
                {
                    ReliabilityLog.DuplicateSkipped(_logger, envelope.MessageId, envelope.MessageType, _endpoint);
                    HeraldDiagnostics.MessagesDuplicate.Add(1, tags);
                }

                await delivery.AckAsync(cancellationToken).ConfigureAwait(false);
                HeraldDiagnostics.MessagesProcessed.Add(1, tags);
                return;
            }

            HeraldDiagnostics.MessagesFailed.Add(1, tags);
            activity?.SetStatus(ActivityStatusCode.Error, failure.Message);
            activity?.AddException(failure);
            // Carried by the message itself (set on its first redelivery), so any node that dead-letters it knows it.
            firstFailure ??= DeadLetterHeaders.FirstFailure(envelope, _timeProvider.GetUtcNow()) ?? _timeProvider.GetUtcNow();
            var decision = policy.Decide(failure, attempt, Random.Shared);
            switch (decision.Action)
            {
                case RetryAction.RetryImmediately:
                    ReliabilityLog.RetryingImmediately(_logger, failure, envelope.MessageId, envelope.MessageType, attempt, _endpoint);
                    HeraldDiagnostics.MessagesRetried.Add(1, [.. tags, new(MetricNames.RetryKindTag, "immediate")]);
                    cancellationToken.ThrowIfCancellationRequested();
                    attempt++;
                    continue;
                case RetryAction.Redeliver:
                    Log.HandlerFailedWillRetry(_logger, failure, envelope.MessageId, envelope.MessageType, attempt, _endpoint, decision.Delay);
                    HeraldDiagnostics.MessagesRetried.Add(1, [.. tags, new(MetricNames.RetryKindTag, "delayed")]);
                    await delivery.NackAsync(decision.Delay, DeadLetterHeaders.ForRedelivery(firstFailure.Value), cancellationToken).ConfigureAwait(false);
                    return;
                default:
                    var cause = policy.IsNeverRetried(failure) ? DeadLetterCause.NotRetryable : DeadLetterCause.RetriesExhausted;
                    await DeadLetterAsync(delivery, failure, cause, attempt, firstFailure, tags, cancellationToken).ConfigureAwait(false);
                    return;
            }
        }
    }

    /// <summary>Runs one attempt in its own scope and unit of work; false when the inbox found a duplicate.</summary>
    private async ValueTask<bool> RunAttemptAsync(Envelope envelope, object message, HandlerInvoker invoker, int attempt, CancellationToken cancellationToken)
    {
        var context = new MessageContext(envelope, message, _endpoint, _root, _bus, cancellationToken, attempt) { Invoker = invoker, UseOutbox = _useOutbox };
        await using (context.ConfigureAwait(false))
        {
            // The attempt is the ambient unit of work: a unit of work its scope creates (for an injected repository, the
            // outbox, the inbox) is the context's, and commands sent from the handlers join it. An attempt that may need no
            // scope (singleton handlers, no inbox) becomes ambient only if it creates one, which saves an allocation.
            if (_inbox is not null || invoker.NeedsScope)
            {
                UnitOfWorkRunner.Enter(context);
            }
            try
            {
                if (_inbox is not null && !await _inbox.TryEnterAsync(context).ConfigureAwait(false))
                {
                    await context.UnitOfWork.RollbackAsync(cancellationToken).ConfigureAwait(false);
                    return false;
                }

                await _pipeline(context).ConfigureAwait(false);

                // Only a unit of work that exists can hold writes; none was created when nothing asked for one.
                if (context.HasUnitOfWork)
                {
                    await context.UnitOfWork.CommitAsync(cancellationToken).ConfigureAwait(false);
                }

                return true;
            }
            catch
            {
                if (context.HasUnitOfWork)
                {
                    await UnitOfWorkRunner.RollbackQuietlyAsync(context.UnitOfWork, _logger).ConfigureAwait(false);
                }

                throw;
            }
        }
    }

    private ValueTask PoisonAsync(Delivery delivery, Exception exception, DeadLetterCause cause, TagList tags, Activity? activity, CancellationToken cancellationToken)
    {
        HeraldDiagnostics.MessagesFailed.Add(1, tags);
        activity?.SetStatus(ActivityStatusCode.Error, exception.Message);
        return DeadLetterAsync(delivery, exception, cause, attempt: 1, firstFailure: null, tags, cancellationToken);
    }

    private async ValueTask DeadLetterAsync(
        Delivery delivery,
        Exception exception,
        DeadLetterCause cause,
        int attempt,
        DateTimeOffset? firstFailure,
        TagList tags,
        CancellationToken cancellationToken)
    {
        var envelope = delivery.Envelope;
        var now = _timeProvider.GetUtcNow();
        firstFailure ??= DeadLetterHeaders.FirstFailure(envelope, now);
        var deadLetter = new DeadLetter
        {
            Id = Guid.CreateVersion7(now),
            Envelope = envelope,
            Endpoint = _endpoint,
            Cause = cause,
            ErrorType = exception.GetType().FullName ?? exception.GetType().Name,
            ErrorMessage = exception.Message,
            StackTrace = exception.StackTrace,
            Fingerprint = ExceptionFingerprint.Compute(exception),
            FirstFailureTime = firstFailure ?? now,
            LastFailureTime = now,
            AttemptCount = attempt,
        };

        // The record first, the ack second: a crash in between redelivers the message, it is never lost.
        try
        {
            await _deadLetters.AddAsync(deadLetter, cancellationToken).ConfigureAwait(false);
        }
        catch (Exception storeFailure) when (storeFailure is not OperationCanceledException || !cancellationToken.IsCancellationRequested)
        {
            ReliabilityLog.DeadLetterStoreFailed(_logger, storeFailure, envelope.MessageId, envelope.MessageType, _endpoint);
            if (!await TryNativeDeadLetterAsync(delivery, deadLetter, cancellationToken).ConfigureAwait(false))
            {
                return;
            }
        }

        Log.DeadLettered(_logger, exception, envelope.MessageId, envelope.MessageType, attempt, _endpoint, $"{cause}: {DescribeFailure(exception)}");
        await delivery.AckAsync(cancellationToken).ConfigureAwait(false);
        HeraldDiagnostics.MessagesDeadLettered.Add(1, tags);
        _monitor?.Signal(_endpoint);
    }

    /// <summary>
    /// The fallback while the store is unreachable: the transport's own dead letters, the record in headers, so the drain
    /// can store it later. False when the message was handed back for redelivery instead (no native dead letters the
    /// drain can read, or they failed too).
    /// </summary>
    private async ValueTask<bool> TryNativeDeadLetterAsync(Delivery delivery, DeadLetter deadLetter, CancellationToken cancellationToken)
    {
        var envelope = delivery.Envelope;
        var delay = _deadLetterOptions.StoreFailureRedeliveryDelay;
        if (!_nativeDeadLetters)
        {
            ReliabilityLog.NativeDeadLetterFailed(_logger, null, envelope.MessageId, envelope.MessageType, _endpoint, delay);
            await delivery.NackAsync(delay, DeadLetterHeaders.ForRedelivery(deadLetter.FirstFailureTime), cancellationToken).ConfigureAwait(false);
            return false;
        }

        try
        {
            await delivery.DeadLetterAsync(deadLetter.ErrorMessage, DeadLetterHeaders.For(deadLetter), cancellationToken).ConfigureAwait(false);
            return true;
        }
        catch (Exception ex) when (ex is not OperationCanceledException || !cancellationToken.IsCancellationRequested)
        {
            // The delivery counts as settled now; the transport handed it back when the move failed.
            ReliabilityLog.NativeDeadLetterFailed(_logger, ex, envelope.MessageId, envelope.MessageType, _endpoint, TimeSpan.Zero);
            return false;
        }
    }

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

    private static Activity? StartActivity(Envelope envelope, string messageType)
    {
        if (!HeraldDiagnostics.ActivitySource.HasListeners())
        {
            return null;
        }

        var activity = HeraldDiagnostics.ActivitySource.StartActivity("process " + messageType, ActivityKind.Consumer, TraceContext.Extract(envelope));
        activity?.SetTag(MetricNames.MessageTypeTag, messageType);
        activity?.SetTag("messaging.message.id", envelope.MessageId.ToString());
        activity?.SetTag("messaging.message.conversation_id", envelope.CorrelationId);
        return activity;
    }
}
