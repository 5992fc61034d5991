using System.Collections.Concurrent;
using Herald.Handling;
using Herald.Hosting;
using Herald.Internal;
using Herald.Messages;
using Herald.Persistence;
using Herald.Reliability.DeadLetters;
using Herald.Transport;
using Herald.Transport.InMemory;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Xunit;

namespace Herald.Conformance.Fuzzing;

/// <summary>
/// An endpoint's real consuming chain for the fuzz suites (issue 10), reached the way every transport's consumer reaches it:
/// the handler the host hands to <see cref="ITransport.ConsumeAsync"/>, run through <see cref="DeliverySettlement"/>.
/// <see cref="DeliverAsync"/> feeds it one decoded envelope (with the transport's decode failure, if any) and asserts it
/// was handled once or dead-lettered once with a reason, and acked: never nacked for a redelivery that would only fail
/// again, never left unsettled, never thrown out of the chain.
/// </summary>
public sealed class FuzzPipeline : IAsyncDisposable
{
    /// <summary>The endpoint (and queue) the pipeline consumes.</summary>
    public const string Endpoint = "fuzz";

    private readonly IHost _host;
    private readonly DeliveryHandler _handler;
    private readonly Counter _handled;
    private readonly RecordingDeadLetterStore _deadLetters;
    private int _undecodable;

    private FuzzPipeline(IHost host, DeliveryHandler handler, Counter handled, RecordingDeadLetterStore deadLetters)
    {
        _host = host;
        _handler = handler;
        _handled = handled;
        _deadLetters = deadLetters;
    }

    /// <summary>How many deliveries reached the handler.</summary>
    public int Handled => _handled.Value;

    /// <summary>How many deliveries were dead-lettered.</summary>
    public int DeadLettered => _deadLetters.Added;

    /// <summary>How many deliveries given to <see cref="DeliverDecodedAsync"/> carried a decode failure.</summary>
    public int Undecodable => _undecodable;

    /// <summary>Dead letters by cause.</summary>
    public IReadOnlyDictionary<DeadLetterCause, int> Causes => _deadLetters.Causes;

    /// <summary>Starts a host whose endpoint handles <see cref="FuzzOrder"/>, dead-letters a failure at once, and refuses bodies over <paramref name="maxReceivedMessageBytes"/>.</summary>
    public static async Task<FuzzPipeline> StartAsync(int maxReceivedMessageBytes = 100_000)
    {
        var handled = new Counter();
        var deadLetters = new RecordingDeadLetterStore();
        var transport = new CapturingTransport();
        var builder = Host.CreateApplicationBuilder();
        builder.Logging.ClearProviders();
        builder.Services.AddSingleton(handled);
        builder.Services.AddHerald(h => h
            .Configure(o =>
            {
                o.EndpointName = Endpoint;
                o.MaxReceivedMessageBytes = maxReceivedMessageBytes;
            })
            .UseTransport(_ => transport)
            .AddMessageType<FuzzOrder>(FuzzInputs.OrderType)
            .AddHandler<FuzzOrderHandler>(ServiceLifetime.Singleton)
            .ConfigureRetries(r => r.Immediate(0).Delayed(0, TimeSpan.FromMilliseconds(1), TimeSpan.FromMilliseconds(1))));
        builder.Services.Replace(ServiceDescriptor.Singleton<IDeadLetterStore>(deadLetters));
        var host = builder.Build();
        await host.StartAsync().ConfigureAwait(false);
        var handler = await transport.Handler.Task.WaitAsync(TimeSpan.FromSeconds(30)).ConfigureAwait(false);
        return new FuzzPipeline(host, handler, handled, deadLetters);
    }

    /// <summary>
    /// Runs one delivery of <paramref name="envelope"/> through the chain and asserts its outcome: handled once or
    /// dead-lettered once (with a reason), and acked. A delivery with a <paramref name="decodeFailure"/> must be dead-lettered.
    /// </summary>
    public async Task<FuzzOutcome> DeliverAsync(Envelope envelope, Exception? decodeFailure)
    {
        ArgumentNullException.ThrowIfNull(envelope);
        var handledBefore = _handled.Value;
        var deadBefore = _deadLetters.Added;
        var delivery = new FuzzDelivery(envelope, decodeFailure);

        Assert.True(await DeliverySettlement.RunAsync(_handler, delivery, NullLogger.Instance, CancellationToken.None).ConfigureAwait(false), "the delivery was not aborted");

        var handled = _handled.Value - handledBefore;
        var dead = _deadLetters.Added - deadBefore;
        Assert.True(handled + dead == 1, $"handled {handled} times and dead-lettered {dead} times");
        Assert.Null(delivery.Nacked);
        Assert.Null(delivery.NativeDeadLetter);
        Assert.True(delivery.Acked, "the delivery is acked");
        if (decodeFailure is not null)
        {
            Assert.True(dead == 1, "an undecodable delivery is dead-lettered");
        }

        if (dead == 1)
        {
            Assert.False(string.IsNullOrWhiteSpace(_deadLetters.Last!.ErrorMessage), "the dead letter says why");
            return FuzzOutcome.DeadLettered;
        }

        return FuzzOutcome.Handled;
    }

    /// <summary>
    /// What a transport's decode function made of one generated message, checked and then delivered: an envelope always;
    /// with a failure, a declared one that says why (it must be dead-lettered); without one, when <paramref name="strict"/>,
    /// an envelope with a type and a delivery attempt of at least 1 (a row reader leaves those checks to the chain).
    /// </summary>
    public Task<FuzzOutcome> DeliverDecodedAsync(Envelope envelope, Exception? decodeFailure, bool strict = true)
    {
        Assert.NotNull(envelope);
        if (decodeFailure is not null)
        {
            _undecodable++;
            Assert.False(string.IsNullOrWhiteSpace(decodeFailure.Message), "a decode failure says why");
        }
        else if (strict)
        {
            Assert.False(string.IsNullOrEmpty(envelope.MessageType), "a decoded envelope has a type");
            Assert.True(envelope.DeliveryAttempt >= 1, "a decoded envelope counts its delivery");
        }

        return DeliverAsync(envelope, decodeFailure);
    }

    /// <summary>
    /// Checks the totals of a run of <paramref name="cases"/> deliveries and writes them out: each handled or dead-lettered;
    /// on a full run, some undecodable and some not, and (when <paramref name="reachesHandler"/>) some handled.
    /// </summary>
    public void AssertRun(int cases, Action<string> writeLine, bool reachesHandler = true)
    {
        ArgumentNullException.ThrowIfNull(writeLine);
        writeLine($"{Undecodable} undecodable; " + Summary(cases));
        Assert.Equal(cases, Handled + DeadLettered);
        if (Fuzz.IsFullRun)
        {
            Assert.InRange(Undecodable, 1, cases - 1);
            Assert.True(!reachesHandler || Handled > 0, "the generator reaches the handler too");
        }
    }

    /// <summary>A line for the test output: how many were handled, and dead-lettered by cause.</summary>
    public string Summary(int cases) =>
        $"{cases} cases: {Handled} handled, {DeadLettered} dead-lettered ({string.Join(", ", Causes.OrderBy(c => c.Key).Select(c => $"{c.Key} {c.Value}"))})";

    /// <inheritdoc />
    public async ValueTask DisposeAsync()
    {
        await _host.StopAsync().ConfigureAwait(false);
        _host.Dispose();
    }

    /// <summary>A message type that validates in its constructor (an exception that is not a JSON one).</summary>
    public sealed record FuzzOrder
    {
        /// <summary>Refuses a quantity that is not positive.</summary>
        public FuzzOrder(int quantity, string name, DateTimeOffset at)
        {
            ArgumentOutOfRangeException.ThrowIfNegativeOrZero(quantity);
            Quantity = quantity;
            Name = name;
            At = at;
        }

        /// <summary>How many; positive.</summary>
        public int Quantity { get; }

        /// <summary>A name.</summary>
        public string Name { get; }

        /// <summary>A time.</summary>
        public DateTimeOffset At { get; }
    }

    /// <summary>Counts handled messages.</summary>
    public sealed class Counter
    {
        private int _value;

        /// <summary>The count so far.</summary>
        public int Value => Volatile.Read(ref _value);

        /// <summary>Counts one.</summary>
        public void Add() => Interlocked.Increment(ref _value);
    }

    /// <summary>Counts what it handles.</summary>
    public sealed class FuzzOrderHandler(Counter counter) : IMessageHandler<FuzzOrder>
    {
        /// <inheritdoc />
        public ValueTask HandleAsync(FuzzOrder message, MessageContext context, CancellationToken cancellationToken)
        {
            counter.Add();
            return ValueTask.CompletedTask;
        }
    }

    private sealed class FuzzDelivery(Envelope envelope, Exception? failure) : Delivery(envelope, Endpoint, failure)
    {
        public bool Acked { get; private set; }

        public TimeSpan? Nacked { get; private set; }

        public string? NativeDeadLetter { get; private set; }

        protected override ValueTask OnAckAsync(CancellationToken cancellationToken)
        {
            Acked = true;
            return ValueTask.CompletedTask;
        }

        protected override ValueTask OnNackAsync(TimeSpan delay, CancellationToken cancellationToken)
        {
            Nacked = delay;
            return ValueTask.CompletedTask;
        }

        protected override ValueTask OnDeadLetterAsync(string reason, CancellationToken cancellationToken)
        {
            NativeDeadLetter = reason;
            return ValueTask.CompletedTask;
        }
    }

    /// <summary>An in-memory transport that hands the endpoint queue's handler to the test instead of consuming it.</summary>
    private sealed class CapturingTransport : ITransport
    {
        private readonly InMemoryTransport _inner = new(InMemoryTransportOptions.Default, TimeProvider.System);

        public TaskCompletionSource<DeliveryHandler> Handler { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public string Name => _inner.Name;

        public TransportCapabilities Capabilities => _inner.Capabilities;

        public ValueTask DeclareQueueAsync(string queue, CancellationToken cancellationToken = default) => _inner.DeclareQueueAsync(queue, cancellationToken);

        public ValueTask BindAsync(string topic, string queue, CancellationToken cancellationToken = default) => _inner.BindAsync(topic, queue, cancellationToken);

        public ValueTask SendAsync(string queue, Envelope envelope, SendOptions? options = null, CancellationToken cancellationToken = default) =>
            _inner.SendAsync(queue, envelope, options, cancellationToken);

        public ValueTask PublishAsync(string topic, Envelope envelope, SendOptions? options = null, CancellationToken cancellationToken = default) =>
            _inner.PublishAsync(topic, envelope, options, cancellationToken);

        public ValueTask<ITransportConsumer> ConsumeAsync(string queue, ConsumerOptions options, DeliveryHandler handler, CancellationToken cancellationToken = default)
        {
            if (queue != Endpoint)
            {
                return _inner.ConsumeAsync(queue, options, handler, cancellationToken);
            }

            Handler.TrySetResult(handler);
            return ValueTask.FromResult<ITransportConsumer>(new IdleConsumer(queue));
        }

        public ValueTask DisposeAsync() => _inner.DisposeAsync();
    }

    private sealed class IdleConsumer(string queue) : ITransportConsumer
    {
        public string Queue => queue;

        public Task StopAsync(CancellationToken cancellationToken = default) => Task.CompletedTask;

        public ValueTask DisposeAsync() => ValueTask.CompletedTask;
    }

    /// <summary>Counts what the chain dead-letters, by cause, keeping only the last one.</summary>
    private sealed class RecordingDeadLetterStore : IDeadLetterStore
    {
        private readonly ConcurrentDictionary<DeadLetterCause, int> _causes = new();
        private int _added;

        public int Added => Volatile.Read(ref _added);

        public DeadLetter? Last { get; private set; }

        public IReadOnlyDictionary<DeadLetterCause, int> Causes => _causes;

        public ValueTask<bool> AddAsync(DeadLetter deadLetter, CancellationToken cancellationToken = default)
        {
            Last = deadLetter;
            _causes.AddOrUpdate(deadLetter.Cause, 1, static (_, n) => n + 1);
            Interlocked.Increment(ref _added);
            return ValueTask.FromResult(true);
        }

        public async ValueTask AddAsync(DeadLetter deadLetter, IUnitOfWork unitOfWork, Action<bool>? added = null, CancellationToken cancellationToken = default)
        {
            var stored = await AddAsync(deadLetter, cancellationToken);
            added?.Invoke(stored);
        }

        public ValueTask<DeadLetter?> GetAsync(Guid id, CancellationToken cancellationToken = default) => new((DeadLetter?)null);

        public ValueTask<IReadOnlyList<DeadLetter>> ListAsync(DeadLetterQuery query, CancellationToken cancellationToken = default) => new([]);

        public ValueTask<long> CountAsync(DeadLetterQuery query, CancellationToken cancellationToken = default) => new(0L);

        public ValueTask<bool> DeleteAsync(Guid id, CancellationToken cancellationToken = default) => new(false);

        public ValueTask DeleteAsync(Guid id, IUnitOfWork unitOfWork, CancellationToken cancellationToken = default) => ValueTask.CompletedTask;

        public ValueTask<int> DeleteManyAsync(DeadLetterQuery query, CancellationToken cancellationToken = default) => new(0);

        public ValueTask<bool> RecordRetryFailureAsync(Guid id, string error, DateTimeOffset time, CancellationToken cancellationToken = default) => new(false);
    }
}

/// <summary>What the chain did with one fuzzed delivery.</summary>
public enum FuzzOutcome
{
    /// <summary>The handler took it.</summary>
    Handled,

    /// <summary>It went to the dead-letter store with a reason.</summary>
    DeadLettered,
}
