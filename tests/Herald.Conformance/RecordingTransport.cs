using System.Collections.Concurrent;
using Herald.Messages;
using Herald.Transport;

namespace Herald.Conformance;

/// <summary>
/// A transport decorator for tests: records how every delivery was settled (acks, nacks with their delays, dead letters)
/// and can make sends fail, to simulate a broker that is down or refuses a message.
/// </summary>
public sealed class RecordingTransport : ITransport, INativeDeadLetterSource
{
    private readonly ITransport _inner;
    private readonly ConcurrentQueue<Settlement> _settlements = new();
    private readonly ConcurrentQueue<(string Destination, Envelope Envelope)> _sent = new();
    private readonly ConcurrentQueue<(string Topic, Envelope Envelope)> _published = new();
    private readonly ConcurrentDictionary<Guid, TimeSpan?> _delays = new();
    private TransportCapabilities? _capabilities;

    /// <summary>Wraps the transport.</summary>
    public RecordingTransport(ITransport inner)
    {
        ArgumentNullException.ThrowIfNull(inner);
        _inner = inner;
    }

    /// <summary>The wrapped transport.</summary>
    public ITransport Inner => _inner;

    /// <summary>When set, called before each send or publish with the destination; an exception it returns is thrown instead of sending.</summary>
    public Func<string, Envelope, Exception?>? FailSend { get; set; }

    /// <summary>Every settlement so far, in order.</summary>
    public IReadOnlyList<Settlement> Settlements => [.. _settlements];

    /// <summary>The delays of every nack so far, in order.</summary>
    public IReadOnlyList<TimeSpan> NackDelays => [.. _settlements.Where(s => s.Kind == SettlementKind.Nack).Select(s => s.Delay)];

    /// <summary>Every envelope the transport accepted (sent or published), with its destination, in order.</summary>
    public IReadOnlyList<(string Destination, Envelope Envelope)> Sent => [.. _sent];

    /// <summary>The envelopes the transport accepted by a publish (not a send), with their topic, in order.</summary>
    public IReadOnlyList<(string Topic, Envelope Envelope)> Published => [.. _published];

    /// <summary>The delay the last accepted send or publish of a message id asked for (null: none); absent when none was accepted.</summary>
    public IReadOnlyDictionary<Guid, TimeSpan?> Delays => _delays;

    /// <inheritdoc />
    public string Name => _inner.Name;

    /// <summary>The wrapped transport's capabilities, unless a test sets others (such as tighter limits).</summary>
    public TransportCapabilities Capabilities
    {
        get => _capabilities ?? _inner.Capabilities;
        set => _capabilities = value;
    }

    /// <inheritdoc />
    public ValueTask DeclareQueueAsync(string queue, CancellationToken cancellationToken = default) => _inner.DeclareQueueAsync(queue, cancellationToken);

    /// <inheritdoc />
    public ValueTask BindAsync(string topic, string queue, CancellationToken cancellationToken = default) => _inner.BindAsync(topic, queue, cancellationToken);

    /// <inheritdoc />
    public async ValueTask SendAsync(string queue, Envelope envelope, SendOptions? options = null, CancellationToken cancellationToken = default)
    {
        ThrowIfFailing(queue, envelope);
        await _inner.SendAsync(queue, envelope, options, cancellationToken).ConfigureAwait(false);
        _delays[envelope.MessageId] = options?.Delay;
        _sent.Enqueue((queue, envelope));
    }

    /// <inheritdoc />
    public async ValueTask PublishAsync(string topic, Envelope envelope, SendOptions? options = null, CancellationToken cancellationToken = default)
    {
        ThrowIfFailing(topic, envelope);
        await _inner.PublishAsync(topic, envelope, options, cancellationToken).ConfigureAwait(false);
        _delays[envelope.MessageId] = options?.Delay;
        _sent.Enqueue((topic, envelope));
        _published.Enqueue((topic, envelope));
    }

    /// <inheritdoc />
    public ValueTask<ITransportConsumer> ConsumeAsync(string queue, ConsumerOptions options, DeliveryHandler handler, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(handler);
        return _inner.ConsumeAsync(queue, options, (delivery, ct) => handler(new RecordingDelivery(delivery, _settlements), ct), cancellationToken);
    }

    /// <inheritdoc />
    public ValueTask<int> DrainDeadLettersAsync(string queue, Func<NativeDeadLetter, CancellationToken, ValueTask> moveAsync, CancellationToken cancellationToken = default) =>
        _inner is INativeDeadLetterSource source ? source.DrainDeadLettersAsync(queue, moveAsync, cancellationToken) : ValueTask.FromResult(0);

    /// <inheritdoc />
    public ValueTask DisposeAsync() => _inner.DisposeAsync();

    private void ThrowIfFailing(string destination, Envelope envelope)
    {
        if (FailSend?.Invoke(destination, envelope) is { } exception)
        {
            throw exception;
        }
    }

    private sealed class RecordingDelivery(Delivery inner, ConcurrentQueue<Settlement> settlements) : Delivery(inner.Envelope, inner.Queue, inner.DecodeFailure)
    {
        public override bool IsLastDelivery => inner.IsLastDelivery;

        protected override ValueTask OnAckAsync(CancellationToken cancellationToken)
        {
            settlements.Enqueue(new Settlement(SettlementKind.Ack, Envelope, TimeSpan.Zero, null));
            return inner.AckAsync(cancellationToken);
        }

        protected override ValueTask OnNackAsync(TimeSpan delay, CancellationToken cancellationToken)
        {
            settlements.Enqueue(new Settlement(SettlementKind.Nack, Envelope, delay, null));
            return inner.NackAsync(delay, cancellationToken);
        }

        protected override ValueTask OnDeadLetterAsync(string reason, CancellationToken cancellationToken)
        {
            settlements.Enqueue(new Settlement(SettlementKind.DeadLetter, Envelope, TimeSpan.Zero, reason));
            return inner.DeadLetterAsync(reason, cancellationToken);
        }

        protected override ValueTask OnNackAsync(TimeSpan delay, IReadOnlyDictionary<string, string> headers, CancellationToken cancellationToken)
        {
            settlements.Enqueue(new Settlement(SettlementKind.Nack, Envelope, delay, null) { Headers = headers });
            return inner.NackAsync(delay, headers, cancellationToken);
        }

        protected override ValueTask OnDeadLetterAsync(string reason, IReadOnlyDictionary<string, string> headers, CancellationToken cancellationToken)
        {
            settlements.Enqueue(new Settlement(SettlementKind.DeadLetter, Envelope, TimeSpan.Zero, reason) { Headers = headers });
            return inner.DeadLetterAsync(reason, headers, cancellationToken);
        }
    }
}

/// <summary>How a delivery was settled.</summary>
public enum SettlementKind
{
    /// <summary>Acked.</summary>
    Ack,

    /// <summary>Nacked, for a redelivery after a delay.</summary>
    Nack,

    /// <summary>Moved to the transport's own dead letters.</summary>
    DeadLetter,
}

/// <summary>One settlement recorded by the <see cref="RecordingTransport"/>.</summary>
/// <param name="Kind">Ack, nack or dead letter.</param>
/// <param name="Envelope">The delivered envelope.</param>
/// <param name="Delay">The redelivery delay of a nack.</param>
/// <param name="Reason">The reason of a native dead letter.</param>
public sealed record Settlement(SettlementKind Kind, Envelope Envelope, TimeSpan Delay, string? Reason)
{
    /// <summary>The headers the settlement put on the copy it redelivered or dead-lettered (empty when none).</summary>
    public IReadOnlyDictionary<string, string> Headers { get; init; } = new Dictionary<string, string>();
}
