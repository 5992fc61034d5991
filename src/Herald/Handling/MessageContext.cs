using Herald.EventSourcing.Aggregates;
using Herald.Messages;
using Herald.Persistence;
using Herald.Reliability;
using Herald.Reliability.Outbox;
using Microsoft.Extensions.DependencyInjection;

namespace Herald.Handling;

/// <summary>
/// What a handler knows about the message it handles, and how it sends more: messages sent or published through
/// the context (or the injected <see cref="IMessageBus"/> while the attempt runs) carry the incoming correlation id, and
/// their causation id is the incoming message id, unless their <see cref="DeliveryOptions"/> set them. Each attempt
/// (immediate retries included) gets a context, a DI scope and a unit of work of its own.
/// </summary>
public sealed class MessageContext : IAsyncDisposable, IUnitOfWorkScope
{
    // One context is made per attempt, so each field here is paid per message: what every attempt of one endpoint shares is
    // held once (see EndpointContext), and what only some attempts make (a scope, its unit of work, items) in one Extras.
    private EndpointContext _endpoint;
    private Extras? _extras;
    private bool _ended;

    internal MessageContext(Envelope envelope, object message, string endpoint, IServiceProvider root, IMessageBus bus, CancellationToken cancellationToken, int attempt = 1)
        : this(envelope, message, new EndpointContext(endpoint, root, bus, UseOutbox: false), cancellationToken, attempt)
    {
    }

    internal MessageContext(Envelope envelope, object message, EndpointContext endpoint, CancellationToken cancellationToken, int attempt)
    {
        Envelope = envelope;
        Message = message;
        Attempt = attempt;
        _endpoint = endpoint;
        CancellationToken = cancellationToken;
    }

    /// <summary>The incoming message's envelope.</summary>
    public Envelope Envelope { get; }

    /// <summary>
    /// The user id the message claims (<see cref="Envelope.UserId"/> from the wire), which any sender can set: not trusted,
    /// never copied into what the handlers send or store. Use <see cref="UserId"/> for decisions.
    /// </summary>
    public string? ClaimedUserId => Envelope.UserId;

    /// <summary>
    /// The user on whose behalf the message acts, as the registered <see cref="IMessageAuthenticator"/> authenticated it;
    /// null without one (the wire claim is not trusted by default). Messages sent and events stored from here carry it.
    /// </summary>
    public string? UserId { get; internal set; }

    /// <summary>The decoded message.</summary>
    public object Message { get; }

    /// <summary>The endpoint (queue) handling it.</summary>
    public string Endpoint => _endpoint.Name;

    /// <summary>Which attempt this is, from 1, counting immediate retries and redeliveries as the retry policy does.</summary>
    public int Attempt { get; }

    /// <summary>
    /// Cancelled when the host stops and the shutdown timeout has passed, and when a lease the attempt relies on (such as
    /// a pending inbox mark) is lost while it runs: its work would then not be committed.
    /// </summary>
    public CancellationToken CancellationToken { get; internal set; }

    /// <summary>The services of this message's scope (its unit of work), created on first use.</summary>
    public IServiceProvider Services => (_extras?.Scope ?? CreateScope()).ServiceProvider;

    /// <summary>A place for middleware to pass values along the pipeline.</summary>
    public IDictionary<string, object?> Items => (_extras ??= new()).Items ??= new Dictionary<string, object?>(StringComparer.Ordinal);

    /// <summary>
    /// This attempt's unit of work (the scoped <see cref="IUnitOfWork"/> of <see cref="Services"/>, which handlers may inject
    /// as well); the pipeline commits it after the handlers succeed, and rolls it back when they fail.
    /// </summary>
    public IUnitOfWork UnitOfWork
    {
        get
        {
            if (_extras?.UnitOfWork is { } unitOfWork)
            {
                return unitOfWork;
            }

            // Resolving it may adopt it already (the persistence package's factory); either way it is this attempt's.
            unitOfWork = Services.GetRequiredService<IUnitOfWork>();
            return _extras!.UnitOfWork ??= unitOfWork;
        }
    }

    /// <summary>True once this attempt's scope created its unit of work (asked for here or injected into a service).</summary>
    internal bool HasUnitOfWork => _extras?.UnitOfWork is not null;

    /// <summary>The stored events' metadata: the incoming message's correlation (or its id), its id as the cause, its authenticated user.</summary>
    EventMetadata IUnitOfWorkScope.Metadata => new()
    {
        CorrelationId = Envelope.CorrelationId ?? Envelope.MessageId.ToString(),
        CausationId = Envelope.MessageId.ToString(),
        UserId = UserId,
    };

    bool IUnitOfWorkScope.HasEnded => _ended;

    Exception? IUnitOfWorkScope.DoomedBy => _extras is { } extras ? Volatile.Read(ref extras.DoomedBy) : null;

    // Per attempt, like the context itself: the next attempt (or message) starts with a unit of work that can commit. Work
    // that joined this context asked for its services, so the extras exist already.
    void IUnitOfWorkScope.Doom(Exception failure) => Interlocked.CompareExchange(ref (_extras ??= new()).DoomedBy, failure, null);

    bool IUnitOfWorkScope.Owns(IUnitOfWork unitOfWork) => ReferenceEquals(_extras?.UnitOfWork, unitOfWork);

    void IUnitOfWorkScope.Adopt(IServiceProvider services, IUnitOfWork unitOfWork)
    {
        if (_extras is { Scope: { } scope } extras && ReferenceEquals(scope.ServiceProvider, services))
        {
            extras.UnitOfWork ??= unitOfWork;
        }
    }

    /// <summary>The delivery on its way through the chain, while this attempt runs: its handlers, and the transport's delivery.</summary>
    internal Pipeline.Consumption? Consumption { get; set; }

    internal HandlerInvoker? Invoker => Consumption?.Invoker;

    /// <summary>
    /// The transport's delivery the message came in (none for an event-store subscription), for <see cref="Internal.BrokerPartitions"/>;
    /// none once the context is disposed, since the chain reuses its consumption and a transport may reuse the delivery.
    /// </summary>
    internal Transport.Delivery? Delivery => Consumption?.Delivery;

    /// <summary>When set, messages sent or published here (or through the injected bus while the attempt runs) go through the outbox of this attempt's unit of work.</summary>
    internal bool UseOutbox
    {
        get => _endpoint.UseOutbox;
        init => _endpoint = _endpoint with { UseOutbox = value };
    }

    /// <summary>True once the scope (and so possibly a unit of work) exists.</summary>
    internal bool HasScope => _extras?.Scope is not null;

    /// <summary>Publishes an event caused by the incoming message (through the outbox when it is on: it leaves only if this attempt commits).</summary>
    public ValueTask PublishAsync<TMessage>(TMessage message, DeliveryOptions? options = null, CancellationToken cancellationToken = default)
        where TMessage : notnull => MessageBus.DeliverAsync(_endpoint.Bus, this, message, options, publish: true, cancellationToken);

    /// <summary>Sends a message caused by the incoming message (through the outbox when it is on: it leaves only if this attempt commits).</summary>
    public ValueTask SendAsync<TMessage>(TMessage message, DeliveryOptions? options = null, CancellationToken cancellationToken = default)
        where TMessage : notnull => MessageBus.DeliverAsync(_endpoint.Bus, this, message, options, publish: false, cancellationToken);

    // The injected IMessageBus asks the same while this attempt is ambient (issue 9). Once the attempt has ended, a late send
    // (from work the handler left running) could not join its unit of work, and a scope made for it would never commit: it
    // leaves at once.
    IOutbox? IUnitOfWorkScope.GetOutbox() => UseOutbox && !_ended ? Services.GetRequiredService<IOutbox>() : null;

    /// <summary>Disposes the message's scope, if one was created.</summary>
    public ValueTask DisposeAsync()
    {
        End();
        return _extras?.Scope is { } scope ? new AsyncServiceScope(scope).DisposeAsync() : ValueTask.CompletedTask;
    }

    /// <summary>Ends the attempt without disposing its scope (a batch's contexts share one, which the batch disposes).</summary>
    internal void End()
    {
        Consumption = null;
        _ended = true;
    }

    // Boxed: only a batch of subscription events shares one scope between contexts.
    internal void UseScope(AsyncServiceScope scope) => (_extras ??= new()).Scope = scope;

    // The scope's unit of work must know this context commits it, and commands sent from here must join it: the pipeline makes
    // every attempt ambient up front; a context made elsewhere becomes ambient on the flow that first needs its scope.
    private IServiceScope CreateScope()
    {
        var scope = _endpoint.Root.CreateScope();
        (_extras ??= new()).Scope = scope;
        if (!ReferenceEquals(UnitOfWorkRunner.Current, this))
        {
            UnitOfWorkRunner.Enter(this);
        }

        return scope;
    }

    // What only some attempts make: a light handler's attempt needs none of it.
    private sealed class Extras
    {
        public IServiceScope? Scope { get; set; }

        public IUnitOfWork? UnitOfWork { get; set; }

#pragma warning disable SA1401, CA1051 // A field, so the first failure is kept with one compare-and-swap.
        public Exception? DoomedBy;
#pragma warning restore SA1401, CA1051

        public Dictionary<string, object?>? Items { get; set; }
    }
}
