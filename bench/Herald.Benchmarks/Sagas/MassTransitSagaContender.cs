using Herald.Benchmarks.Harness;
using Herald.Benchmarks.InProcess;
using MassTransit;
using MassTransit.Saga;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;

namespace Herald.Benchmarks.Sagas;

/// <summary>What MassTransit's order saga keeps per instance (an object in the in-memory repository).</summary>
public sealed class MassTransitOrderState : SagaStateMachineInstance
{
    public Guid CorrelationId { get; set; }

    public string CurrentState { get; set; } = "";

    public string? Customer { get; set; }

    public decimal Total { get; set; }

    public string? PaymentReference { get; set; }

    public string? TrackingNumber { get; set; }
}

/// <summary>The same machine as Herald's: submitted creates the instance, payment and shipment move it, shipped is final.</summary>
public sealed class MassTransitOrderStateMachine : MassTransitStateMachine<MassTransitOrderState>
{
    public MassTransitOrderStateMachine()
    {
        InstanceState(x => x.CurrentState);
        Event(() => Submission, x => x.CorrelateById(context => context.Message.OrderId));
        Event(() => Payment, x => x.CorrelateById(context => context.Message.OrderId));
        Event(() => Shipment, x => x.CorrelateById(context => context.Message.OrderId));

        Initially(When(Submission)
            .Then(context =>
            {
                context.Saga.Customer = context.Message.Customer;
                context.Saga.Total = context.Message.Total;
            })
            .TransitionTo(AwaitingPayment));
        During(AwaitingPayment, When(Payment)
            .Then(context => context.Saga.PaymentReference = context.Message.PaymentReference)
            .TransitionTo(AwaitingShipment));
        During(AwaitingShipment, When(Shipment)
            .Then(context => context.Saga.TrackingNumber = context.Message.TrackingNumber)
            .TransitionTo(Shipped));
    }

    public State AwaitingPayment { get; private set; } = null!;

    public State AwaitingShipment { get; private set; } = null!;

    // The state the machine ends in, kept in the repository as Herald keeps its completed instances (Finalize with
    // SetCompletedWhenFinalized would remove the instance instead).
    public State Shipped { get; private set; } = null!;

    public Event<OrderSubmitted> Submission { get; private set; } = null!;

    public Event<PaymentAccepted> Payment { get; private set; } = null!;

    public Event<OrderShipped> Shipment { get; private set; } = null!;
}

/// <summary>MassTransit 8: AddSagaStateMachine with its in-memory repository on the in-memory transport, events published with IBus.Publish.</summary>
internal sealed class MassTransitSagaContender : ISagaContender
{
    private IHost? _host;
    private IBus? _bus;

    public string Name => "MassTransit (in-memory)";

    public string Setup =>
        $"MassTransit {PackageVersion.Of(typeof(IBus))}: `AddMassTransit(x => {{ x.AddSagaStateMachine<MassTransitOrderStateMachine, MassTransitOrderState>().InMemoryRepository(); x.UsingInMemory((ctx, cfg) => cfg.ConfigureEndpoints(ctx)); }})`, " +
        "usage telemetry off, default endpoint settings, System.Text.Json bodies; the in-memory repository keeps each instance as an object (no serialization); a `MassTransitStateMachine` with `CorrelateById(m => m.OrderId)` per event, `Initially`, two `During` states and a last state it stays in; " +
        "each `.Then` copies the event's fields into the instance; `IBus.Publish`. Finished: a receive observer's `PostReceive` (after the saga repository saved the instance).";

    public HandledCounter Finished { get; } = new();

    public async Task StartAsync(CancellationToken cancellationToken)
    {
        var builder = Hosts.CreateBuilder();
        builder.Services.AddMassTransit(x =>
        {
            // MassTransit 8.5 reports usage over HTTP at start; a benchmark sends nothing off the machine.
            x.DisableUsageTelemetry();
            x.AddSagaStateMachine<MassTransitOrderStateMachine, MassTransitOrderState>().InMemoryRepository();
            x.UsingInMemory((context, cfg) =>
            {
                cfg.ConnectReceiveObserver(new FinishedMessages(Finished));
                cfg.ConfigureEndpoints(context);
            });
        });
        builder.Services.AddOptions<MassTransitHostOptions>().Configure(o => o.WaitUntilStarted = true);
        _host = builder.Build();
        await _host.StartAsync(cancellationToken).ConfigureAwait(false);
        _bus = _host.Services.GetRequiredService<IBus>();
    }

    public ValueTask PublishAsync<TEvent>(TEvent message, CancellationToken cancellationToken)
        where TEvent : class =>
        new((_bus ?? throw new InvalidOperationException("Not started.")).Publish(message, cancellationToken));

    public async Task<string?> StateOfAsync(Guid orderId, CancellationToken cancellationToken)
    {
        var repository = (_host ?? throw new InvalidOperationException("Not started.")).Services.GetRequiredService<ILoadSagaRepository<MassTransitOrderState>>();
        var instance = await repository.Load(orderId).ConfigureAwait(false);
        return instance?.CurrentState;
    }

    public async ValueTask DisposeAsync()
    {
        if (_host is not null)
        {
            await _host.StopAsync().ConfigureAwait(false);
            _host.Dispose();
        }
    }

    /// <summary>Counts received messages once their whole receive pipeline (the saga's consume and save) ran; a fault fails the run.</summary>
    private sealed class FinishedMessages(HandledCounter counter) : IReceiveObserver
    {
        public Task PreReceive(ReceiveContext context) => Task.CompletedTask;

        public Task PostReceive(ReceiveContext context)
        {
            counter.Increment();
            return Task.CompletedTask;
        }

        public Task PostConsume<T>(ConsumeContext<T> context, TimeSpan duration, string consumerType)
            where T : class => Task.CompletedTask;

        public Task ConsumeFault<T>(ConsumeContext<T> context, TimeSpan duration, string consumerType, Exception exception)
            where T : class
        {
            counter.Fail($"MassTransit's saga faulted on {typeof(T).Name}: {exception.Message}");
            return Task.CompletedTask;
        }

        public Task ReceiveFault(ReceiveContext context, Exception exception)
        {
            counter.Fail($"MassTransit failed to receive a message: {exception.Message}");
            return Task.CompletedTask;
        }
    }
}
