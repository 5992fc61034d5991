using System.Text.Json;
using Herald.Handling;
using Herald.Hosting;
using Herald.Messages;
using Herald.Reliability.DeadLetters;
using Herald.Sagas;
using Herald.Transport;
using Herald.Transport.InMemory;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Time.Testing;
using Xunit;

namespace Herald.Conformance.Sagas;

/// <summary>
/// State-machine sagas on a persistence engine, against a reference model: an order machine (a starting event, a few
/// transitions, two timeouts on a fake clock, final states, events ignored in some states) fed a seeded stream of events,
/// duplicates, events for unknown or finished instances, timeouts firing and restarts; and two consumers of one store
/// handling one instance's events at once. The broker (the in-memory transport) outlives the hosts, as a real one does.
/// </summary>
public abstract partial class SagaStateMachineConformance
{
    /// <summary>The machine's name: the saga type of its instances.</summary>
    protected const string SagaName = "smc-orders";

    /// <summary>How long after its last line an order waits for its stock before it is cancelled.</summary>
    protected static readonly TimeSpan ReserveWindow = TimeSpan.FromMinutes(10);

    /// <summary>How long a charge waits for its payment before it is tried again.</summary>
    protected static readonly TimeSpan PaymentWindow = TimeSpan.FromMinutes(4);

    /// <summary>Names a fresh, empty store (a file, a schema) for one test; every host of the test shares it.</summary>
    protected abstract string NewStore();

    /// <summary>Makes the host keep its saga instances, inbox and dead letters on the engine at <paramref name="store"/>.</summary>
    protected abstract void UseStore(HeraldBuilder herald, string store);

    [MessageType("smc-order-placed")]
    public sealed record OrderPlaced(string OrderId, int Total);

    [MessageType("smc-line-added")]
    public sealed record LineAdded(string OrderId, int Line);

    [MessageType("smc-stock-reserved")]
    public sealed record StockReserved(string OrderId);

    [MessageType("smc-payment-taken")]
    public sealed record PaymentTaken(string OrderId);

    [MessageType("smc-reservation-timed-out")]
    public sealed record ReservationTimedOut(string OrderId);

    [MessageType("smc-payment-timed-out")]
    public sealed record PaymentTimedOut(string OrderId);

    [MessageType("smc-reserve-stock")]
    public sealed record ReserveStock(string OrderId, int Total);

    [MessageType("smc-charge-payment")]
    public sealed record ChargePayment(string OrderId, int Total, int Attempt);

    [MessageType("smc-ship-order")]
    public sealed record ShipOrder(string OrderId, int Lines);

    [MessageType("smc-release-stock")]
    public sealed record ReleaseStock(string OrderId);

    /// <summary>An order's data.</summary>
    public sealed class OrderData
    {
        public int Total { get; set; }

        public List<int> Lines { get; set; } = [];

        public int Attempts { get; set; }
    }

    /// <summary>
    /// Placed orders reserve stock and wait for it (the "reserve" timeout, rescheduled by every line); reserved ones charge and
    /// wait for the payment (the "payment" timeout, which charges again). "reserve" is not cancelled when the stock arrives:
    /// firing in Charging, which has no transition for it, it only leaves the instance. Lines are ignored once charging,
    /// a second OrderPlaced always, StockReserved for no instance is dead-lettered.
    /// </summary>
    protected static SagaStateMachine<OrderData> Machine() =>
        SagaStateMachine.Create<OrderData>(SagaName, m => m
            .Correlate<OrderPlaced>(e => e.OrderId)
            .Correlate<LineAdded>(e => e.OrderId)
            .Correlate<StockReserved>(e => e.OrderId, MissingInstance.DeadLetter)
            .Correlate<PaymentTaken>(e => e.OrderId)
            .Correlate<ReservationTimedOut>(e => e.OrderId)
            .Correlate<PaymentTimedOut>(e => e.OrderId)
            .Initially<OrderPlaced>("Reserving", async (saga, placed) =>
            {
                saga.Data.Total = placed.Total;
                await saga.SendAsync(new ReserveStock(placed.OrderId, placed.Total));
                await saga.ScheduleTimeoutAsync("reserve", new ReservationTimedOut(placed.OrderId), ReserveWindow);
            })
            .During("Reserving", s => s
                .When<LineAdded>("Reserving", async (saga, line) =>
                {
                    // Widens the window between load and save, so concurrent lines do conflict.
                    await Task.Yield();
                    saga.Data.Lines.Add(line.Line);
                    await saga.ScheduleTimeoutAsync("reserve", new ReservationTimedOut(saga.SagaId), ReserveWindow);
                })
                .When<StockReserved>("Charging", async (saga, _) =>
                {
                    saga.Data.Attempts = 1;
                    await saga.SendAsync(new ChargePayment(saga.SagaId, saga.Data.Total, 1));
                    await saga.ScheduleTimeoutAsync("payment", new PaymentTimedOut(saga.SagaId), PaymentWindow);
                })
                .When<ReservationTimedOut>("Cancelled", (saga, _) => saga.SendAsync(new ReleaseStock(saga.SagaId))))
            .During("Charging", s => s
                .When<PaymentTaken>("Completed", (saga, _) => saga.SendAsync(new ShipOrder(saga.SagaId, saga.Data.Lines.Count)))
                .When<PaymentTimedOut>("Charging", async (saga, _) =>
                {
                    saga.Data.Attempts++;
                    await saga.SendAsync(new ChargePayment(saga.SagaId, saga.Data.Total, saga.Data.Attempts));
                    await saga.ScheduleTimeoutAsync("payment", new PaymentTimedOut(saga.SagaId), PaymentWindow);
                }))
            .Final("Completed", "Cancelled"));

    [Fact]
    public async Task ConcurrentEvents_OnTwoConsumersOfOneStore_LandOnce_AndNoTransitionRunsTwice()
    {
        const int Lines = 30;
        var store = NewStore();
        await using var broker = new Broker();
        using var first = await StartHostAsync(store, broker, concurrency: 4);
        using var second = await StartHostAsync(store, broker, concurrency: 4);
        var bus = first.Services.GetRequiredService<IMessageBus>();
        var sagas = first.Services.GetRequiredService<ISagaStore>();

        await bus.SendAsync(new OrderPlaced("c-1", 7));
        await broker.SettledAsync(1, "OrderPlaced");
        await Task.WhenAll(Enumerable.Range(1, Lines).Select(i => bus.SendAsync(new LineAdded("c-1", i)).AsTask()));
        await broker.SettledAsync(1 + Lines, "every line");

        // Without an outbox a transition's sends leave after its commit: one reserve timeout per committed transition.
        var timeouts = await Eventually.ValueAsync(
            () => broker.SentOfType("smc-reservation-timed-out") is { Count: 1 + Lines } all ? all : null, $"{1 + Lines} reserve timeouts are sent");
        var instance = (await sagas.LoadAsync(SagaName, "c-1"))!;
        var data = Read(instance);
        Assert.Equal(Enumerable.Range(1, Lines), data.Lines.Order());
        Assert.Equal(1 + Lines, instance.Version);
        var held = Assert.Single(instance.Timeouts);
        Assert.Equal(broker.Clock.GetUtcNow() + ReserveWindow, held.DueAt);
        Assert.Contains(held.Id, timeouts.Select(TimeoutId));
        Assert.Single(broker.SentOfType("smc-reserve-stock"));

        // Every reserve timeout comes due; only the one the instance holds fires, once.
        broker.Clock.Advance(ReserveWindow);
        await broker.SettledAsync(2 + 2 * Lines, "every reserve timeout");
        var cancelled = await Eventually.ValueAsync(async () => await sagas.LoadAsync(SagaName, "c-1") is { State: "Cancelled" } done ? done : null, "the order is cancelled");
        Assert.Equal(SagaStatus.Completed, cancelled.Status);
        Assert.Equal(2 + Lines, cancelled.Version);
        Assert.Empty(cancelled.Timeouts);
        await Eventually.UntilAsync(() => broker.SentOfType("smc-release-stock").Count == 1, "the stock is released");
        Assert.Empty(await first.Services.GetRequiredService<IDeadLetterStore>().ListAsync(new DeadLetterQuery { Endpoint = broker.Endpoint }));
        Assert.Single(broker.SentOfType("smc-release-stock"));

        await first.StopAsync();
        await second.StopAsync();
    }

    /// <summary>Starts a host on <paramref name="store"/> consuming the broker's endpoint queue.</summary>
    private async Task<IHost> StartHostAsync(string store, Broker broker, int concurrency)
    {
        var builder = Host.CreateApplicationBuilder();
        builder.Logging.ClearProviders();
        builder.Services.AddSingleton<TimeProvider>(broker.Clock);
        builder.Services.AddHerald(h =>
        {
            h.UseTransport(_ => broker.Transport);
            h.Configure(o =>
            {
                o.EndpointName = broker.Endpoint;
                o.MaxConcurrency = concurrency;
            });
            UseStore(h, store);

            // The clock moves by hours in a run: the inbox keeps its marks, and the sweep that sends lost timeouts again
            // stays out (nothing is lost without a crash between a commit and its send), so every delivery is one the model expects.
            h.UseInbox(o => o.Window = TimeSpan.FromDays(20));
            h.ConfigureSagas(o =>
            {
                o.ResumeInterval = TimeSpan.FromDays(20);
                o.StaleAfter = TimeSpan.FromDays(20);
            });
            h.ConfigureRetries(r => r.Immediate(50).Delayed(0, TimeSpan.Zero, TimeSpan.Zero));
            h.AddMessageType<OrderPlaced>().AddMessageType<LineAdded>().AddMessageType<StockReserved>().AddMessageType<PaymentTaken>()
                .AddMessageType<ReservationTimedOut>().AddMessageType<PaymentTimedOut>()
                .AddMessageType<ReserveStock>().AddMessageType<ChargePayment>().AddMessageType<ShipOrder>().AddMessageType<ReleaseStock>()
                .Route<ReserveStock>(broker.Outside).Route<ChargePayment>(broker.Outside).Route<ShipOrder>(broker.Outside).Route<ReleaseStock>(broker.Outside)
                .AddSaga(Machine());
        });
        var host = builder.Build();
        await host.StartAsync();
        return host;
    }

    private static OrderData Read(SagaInstance instance) => JsonSerializer.Deserialize<OrderData>(instance.Data.Span, JsonSerializerOptions.Web)!;

    private static Guid TimeoutId(Envelope envelope) => Guid.Parse(envelope.GetHeader(HeaderNames.SagaTimeoutId)!);

    /// <summary>The broker and the clock, which outlive the hosts: a recording transport over an in-memory one the hosts cannot dispose.</summary>
    private sealed class Broker : IAsyncDisposable
    {
        private readonly InMemoryTransport _inMemory;

        public Broker()
        {
            Clock = new FakeTimeProvider(new DateTimeOffset(2030, 1, 2, 3, 0, 0, TimeSpan.Zero));
            _inMemory = new InMemoryTransport(InMemoryTransportOptions.Default, Clock);
            Transport = new RecordingTransport(new Undisposed(_inMemory));
        }

        public FakeTimeProvider Clock { get; }

        public RecordingTransport Transport { get; }

        public string Endpoint { get; } = "smc-" + Guid.NewGuid().ToString("N")[..12];

        /// <summary>Where the machine's commands go (no one consumes them).</summary>
        public string Outside { get; } = "smc-outside-" + Guid.NewGuid().ToString("N")[..12];

        public IReadOnlyList<Envelope> SentOfType(string type) => [.. Transport.Sent.Where(s => s.Envelope.MessageType == type).Select(s => s.Envelope)];

        /// <summary>Waits until <paramref name="count"/> deliveries were settled in all.</summary>
        public Task SettledAsync(int count, string what) =>
            Eventually.UntilAsync(() => Transport.Settlements.Count >= count, $"{count} deliveries are settled ({what})");

        public ValueTask DisposeAsync() => _inMemory.DisposeAsync();
    }

    /// <summary>A transport whose disposal (by a host's container) leaves the broker running for the next host.</summary>
    private sealed class Undisposed(ITransport inner) : ITransport
    {
        public string Name => inner.Name;

        public TransportCapabilities Capabilities => inner.Capabilities;

        public ValueTask DeclareQueueAsync(string queue, CancellationToken cancellationToken = default) => inner.DeclareQueueAsync(queue, cancellationToken);

        public ValueTask BindAsync(string topic, string queue, CancellationToken cancellationToken = default) => inner.BindAsync(topic, queue, cancellationToken);

        public ValueTask SendAsync(string queue, Envelope envelope, SendOptions? options = null, CancellationToken cancellationToken = default) =>
            inner.SendAsync(queue, envelope, options, cancellationToken);

        public ValueTask PublishAsync(string topic, Envelope envelope, SendOptions? options = null, CancellationToken cancellationToken = default) =>
            inner.PublishAsync(topic, envelope, options, cancellationToken);

        public ValueTask<ITransportConsumer> ConsumeAsync(string queue, ConsumerOptions options, DeliveryHandler handler, CancellationToken cancellationToken = default) =>
            inner.ConsumeAsync(queue, options, handler, cancellationToken);

        public ValueTask DisposeAsync() => ValueTask.CompletedTask;
    }

    private static JsonElement Body(Envelope envelope) => JsonDocument.Parse(envelope.Body).RootElement;
}
