using Herald.Messages;
using Microsoft.Extensions.DependencyInjection;

namespace Herald.Handling;

/// <summary>
/// What a handler knows about the message it handles, and how it sends more: messages sent or published through
/// the context carry the incoming correlation id, and their causation id is the incoming message id.
/// </summary>
public sealed class MessageContext : IAsyncDisposable
{
    private readonly IServiceProvider _root;
    private readonly IMessageBus _bus;
    private AsyncServiceScope? _scope;
    private Dictionary<string, object?>? _items;

    internal MessageContext(Envelope envelope, object message, string endpoint, IServiceProvider root, IMessageBus bus, CancellationToken cancellationToken)
    {
        Envelope = envelope;
        Message = message;
        Endpoint = endpoint;
        _root = root;
        _bus = bus;
        CancellationToken = cancellationToken;
    }

    /// <summary>The incoming message's envelope.</summary>
    public Envelope Envelope { get; }

    /// <summary>The decoded message.</summary>
    public object Message { get; }

    /// <summary>The endpoint (queue) handling it.</summary>
    public string Endpoint { get; }

    /// <summary>Cancelled when the host stops and the shutdown timeout has passed.</summary>
    public CancellationToken CancellationToken { get; }

    /// <summary>The services of this message's scope (its unit of work), created on first use.</summary>
    public IServiceProvider Services => (_scope ??= _root.CreateAsyncScope()).ServiceProvider;

    /// <summary>A place for middleware to pass values along the pipeline.</summary>
    public IDictionary<string, object?> Items => _items ??= new Dictionary<string, object?>(StringComparer.Ordinal);

    internal HandlerInvoker? Invoker { get; set; }

    /// <summary>Publishes an event caused by the incoming message.</summary>
    public ValueTask PublishAsync<TMessage>(TMessage message, DeliveryOptions? options = null, CancellationToken cancellationToken = default)
        where TMessage : notnull => _bus.PublishAsync(message, Follow(options), cancellationToken);

    /// <summary>Sends a message caused by the incoming message.</summary>
    public ValueTask SendAsync<TMessage>(TMessage message, DeliveryOptions? options = null, CancellationToken cancellationToken = default)
        where TMessage : notnull => _bus.SendAsync(message, Follow(options), cancellationToken);

    /// <summary>Disposes the message's scope, if one was created.</summary>
    public ValueTask DisposeAsync() => _scope is { } scope ? scope.DisposeAsync() : ValueTask.CompletedTask;

    internal void UseScope(AsyncServiceScope scope) => _scope = scope;

    private DeliveryOptions Follow(DeliveryOptions? options)
    {
        options ??= DeliveryOptions.Default;
        return options with
        {
            CorrelationId = options.CorrelationId ?? Envelope.CorrelationId ?? Envelope.MessageId.ToString(),
            CausationId = Envelope.MessageId.ToString(),
            UserId = options.UserId ?? Envelope.UserId,
        };
    }
}
