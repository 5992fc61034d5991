using Herald.EventSourcing;
using Herald.EventSourcing.Subscriptions;
using Herald.EventSourcing.Upcasting;
using Herald.Hosting;
using Herald.Messages;
using Herald.Projections;
using Herald.Reliability.DeadLetters;
using Herald.Reliability.Inbox;
using Herald.Reliability.Outbox;
using Herald.Reliability.Retry;
using Herald.Transport;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;

namespace Herald.Handling.Pipeline;

/// <summary>
/// Builds the consuming chain of an endpoint from its dependencies, given once by DI: each step gets what it uses in its
/// constructor, and a step that has nothing to do on this host (no upcasters, no inbox) is left out of the chain.
/// </summary>
internal sealed class EndpointPipelineFactory(
    IServiceProvider services,
    MessageTypeRegistry registry,
    IMessageSerializer serializer,
    HandlerRegistry handlers,
    IMessageBus bus,
    RetryPolicies retries,
    IDeadLetterStore deadLetters,
    IOptions<DeadLetterOptions> deadLetterOptions,
    ITransport transport,
    TimeProvider timeProvider,
    IEnumerable<IMessageMiddleware> middleware,
    DeadLetterMonitor? monitor = null,
    InboxStep? inbox = null,
    IOptions<OutboxOptions>? outboxOptions = null,
    OutboxRelay? outboxRelay = null,
    EventUpcasterRegistry? upcasters = null,
    ILoggerFactory? loggerFactory = null,
    IOptions<HeraldOptions>? heraldOptions = null,
    IMessageAuthenticator? authenticator = null)
{
    private readonly IMessageMiddleware[] _middleware = [.. middleware];
    private readonly ILogger _logger = (loggerFactory ?? NullLoggerFactory.Instance).CreateLogger("Herald");

    /// <summary>The chain of a transport's endpoint: a dead letter the store refuses falls back to the transport's own.</summary>
    public EndpointPipeline Create(string endpoint) =>
        Create(endpoint, nativeDeadLetters: transport is { Capabilities.SupportsNativeDeadLetter: true } and INativeDeadLetterSource, checkpoint: null, DeadLetterOrigin.Endpoint);

    /// <summary>The receive limit of a transport's endpoint: the option, or else what the transport accepts on a send.</summary>
    internal int MaxReceivedBytes => heraldOptions?.Value.MaxReceivedMessageBytes ?? transport.Capabilities.MaxMessageBytes;

    /// <summary>
    /// The chain of <paramref name="endpoint"/>. <paramref name="nativeDeadLetters"/>: dead letters the store refuses go to
    /// the transport's own (only those a drain can move back into the store; others would be stranded out of sight).
    /// <paramref name="checkpoint"/>: a step run in each attempt's unit of work after the handlers (a subscription's checkpoint).
    /// <paramref name="origin"/>: the kind of consumer its dead letters name, which a retry takes them back to.
    /// </summary>
    internal EndpointPipeline Create(string endpoint, bool nativeDeadLetters, Func<AttemptStep, AttemptStep>? checkpoint, DeadLetterOrigin origin, HandlerRegistry? endpointHandlers = null)
    {
        AttemptStep attempt = new HandlerStep(_middleware, services);
        if (checkpoint is not null)
        {
            attempt = checkpoint(attempt);
        }

        // A checkpointed chain (a subscription, a projection) needs no inbox: its checkpoint commits with the handlers' writes,
        // so an event is never taken twice. Inbox marks there would also share the message ids of the published copies of
        // the same stored events, and a subscription named like an endpoint would ack those as duplicates unhandled.
        var useInbox = inbox is not null && checkpoint is null && inbox.IsEnabledFor(endpoint);
        if (useInbox)
        {
            attempt = new InboxCheckStep(inbox!, attempt);
        }

        // A subscription's events were stored by Herald with an authenticated user id; a transport's wire claim is trusted
        // only through the authenticator (issue 10).
        var unitOfWork = UnitOfWork(endpoint, attempt, storedEvents: checkpoint is not null);
        // A subscription reads events its own store accepted (under the store's size limit), not a transport's deliveries.
        var maxBodyBytes = checkpoint is null ? MaxReceivedBytes : int.MaxValue;
        var step = Decoding(endpoint, endpointHandlers ?? handlers, maxBodyBytes, new RetryStep(endpoint, retries, serializer, timeProvider, _logger, unitOfWork));
        step = new SettleStep(endpoint, origin, deadLetters, monitor, deadLetterOptions.Value.StoreFailureRedeliveryDelay, nativeDeadLetters, timeProvider, _logger, step);
        step = new TraceStep(endpoint, registry, upcasters, step);
        return new EndpointPipeline(endpoint, step);
    }

    /// <summary>
    /// A subscription whose events run through the chain of an endpoint named after it: each event's checkpoint is written
    /// in the unit of work of its handlers. Without a filter it follows the event types this host has handlers for.
    /// </summary>
    internal EventSubscription CreateSubscription(IEventStore store, ICheckpointStore checkpoints, EventSubscriptionOptions options)
    {
        ArgumentNullException.ThrowIfNull(options);
        var endpoint = options.SubscriptionId;
        var filter = options.Filter ?? EventFilter.ForEventTypes([.. handlers.MessageTypes.Select(registry.GetName)]);
        return CreateSubscription(
            store, checkpoints, options with { Filter = filter }, next => new CheckpointStep(endpoint, checkpoints, next), endpointHandlers: null, DeadLetterOrigin.EventSubscription);
    }

    /// <summary>
    /// A subscription whose events run through a chain with <paramref name="attempt"/> around the handlers (the checkpoint
    /// written in their unit of work) and, when given, handlers of its own instead of the host's (a projection's). With
    /// <paramref name="batching"/> (more than one event per commit), the events of a read are applied in batches, each in one
    /// unit of work; a batch that fails runs again event by event through the chain. The chain goes by
    /// <paramref name="endpoint"/> (its retry policy, dead letters, traces), else by the subscription's id; its dead letters
    /// (also those of unreadable events) name <paramref name="origin"/>; a projection's note their delayed retries' waits in
    /// <paramref name="retryWaits"/>.
    /// </summary>
    internal EventSubscription CreateSubscription(
        IEventStore store,
        ICheckpointStore checkpoints,
        EventSubscriptionOptions options,
        Func<AttemptStep, AttemptStep> attempt,
        HandlerRegistry? endpointHandlers,
        DeadLetterOrigin origin,
        Func<long, CancellationToken, ValueTask>? saveCheckpoint = null,
        SubscriptionBatching? batching = null,
        string? endpoint = null,
        ProjectionRetryWaits? retryWaits = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        endpoint ??= options.SubscriptionId;

        // The chain reads every event under its current type name (the upcast step renames it), so the store is asked for
        // the types of the filter under their former names too.
        options = options with { Filter = upcasters?.Widen(options.Filter) ?? options.Filter };
        var pipeline = Create(endpoint, nativeDeadLetters: false, attempt, origin, endpointHandlers);
        var events = new SubscriptionPipeline(pipeline, options.SubscriptionId, timeProvider, _logger, retryWaits);
        if (batching is not { CommitEvery: > 1 })
        {
            return new EventSubscription(store, checkpoints, events.HandleAsync, options)
            {
                SaveCheckpoint = saveCheckpoint,
                Logger = _logger,
                DeadLetterEndpoint = endpoint,
                DeadLetterOrigin = origin,
                DeadLetterMonitor = monitor,
                TimeProvider = timeProvider,
            };
        }

        // The same decoding steps as the chain's, ending where the chain would start its retries: a batch applies what they
        // decoded in one unit of work of its own, and falls back to the chain when anything fails.
        var decode = Decoding(endpoint, endpointHandlers ?? handlers, int.MaxValue, new DecodedStep());
        var useOutbox = OutboxRelay.CarriesHandlerMessages(outboxRelay, outboxOptions);
        var batch = new BatchedSubscriptionPipeline(
            endpoint,
            registry,
            upcasters,
            decode,
            batching.Attempt(new HandlerStep(_middleware, services)),
            batching.Checkpoint,
            events,
            services,
            bus,
            useOutbox,
            new UserTrust(authenticator, TrustEnvelope: true),
            _logger);
        return new EventSubscription(store, checkpoints, events.HandleAsync, options)
        {
            SaveCheckpoint = saveCheckpoint,
            Logger = _logger,
            BatchHandler = batch.HandleAsync,
            BatchLimit = batching.CommitEvery,
            DeadLetterEndpoint = endpoint,
            DeadLetterOrigin = origin,
            DeadLetterMonitor = monitor,
            TimeProvider = timeProvider,
        };
    }

    /// <summary>
    /// Applies one stored event once, outside its subscription, through the steps of <paramref name="endpoint"/>'s chain:
    /// decode, upcast, deserialize, then <paramref name="attempt"/> around <paramref name="endpointHandlers"/> in one unit of
    /// work, which commits. No retries, no dead letters: what fails is thrown (the retry of a dead letter).
    /// </summary>
    internal ReplayPipeline CreateReplay(string endpoint, Func<AttemptStep, AttemptStep> attempt, HandlerRegistry endpointHandlers) =>
        new(new TraceStep(endpoint, registry, upcasters, Decoding(endpoint, endpointHandlers, int.MaxValue, new ReplayStep(UnitOfWork(endpoint, attempt(new HandlerStep(_middleware, services)), storedEvents: true)))));

    // One attempt's unit of work around attempt; storedEvents: the envelope's user id is Herald's own record (issue 10).
    private UnitOfWorkStep UnitOfWork(string endpoint, AttemptStep attempt, bool storedEvents) =>
        new(endpoint, services, bus, OutboxRelay.CarriesHandlerMessages(outboxRelay, outboxOptions), _logger, attempt, new UserTrust(authenticator, TrustEnvelope: storedEvents));

    // Decode, upcast and deserialize, in front of next: the steps every source's deliveries take before their attempts.
    private ConsumeStep Decoding(string endpoint, HandlerRegistry endpointHandlers, int maxBodyBytes, ConsumeStep next)
    {
        ConsumeStep step = new DeserializeStep(endpoint, serializer, next);
        if (upcasters is not null)
        {
            step = new UpcastStep(endpoint, upcasters, step);
        }

        return new DecodeStep(endpoint, endpointHandlers, serializer, maxBodyBytes, step);
    }

    /// <summary>The host's dead letters.</summary>
    internal IDeadLetterStore DeadLetters => deadLetters;

    /// <summary>The name a message type is stored under.</summary>
    internal string TypeName(Type type) => registry.GetName(type);
}
