using System.Text;
using Herald.Conformance;
using Herald.Handling;
using Herald.Messages;
using Herald.Reliability.DeadLetters;
using Herald.Sagas;
using Herald.Tests.Reliability;

namespace Herald.Tests.Sagas;

public sealed class SagaStateMachineTests
{
    [MessageType("sm-order-placed")]
    public sealed record OrderPlaced(string OrderId, decimal Total);

    [MessageType("sm-stock-reserved")]
    public sealed record StockReserved(string OrderId);

    [MessageType("sm-payment-taken")]
    public sealed record PaymentTaken(string OrderId);

    [MessageType("sm-line-added")]
    public sealed record LineAdded(string OrderId, int Line);

    [MessageType("sm-reserve-stock")]
    public sealed record ReserveStock(string OrderId);

    [MessageType("sm-shipment-booked")]
    public sealed record ShipmentBooked(OrderRef? Order);

    public sealed record OrderRef(string OrderId);

    [MessageType("sm-cart-opened")]
    public sealed record CartOpened(Guid CartId);

    // The stock service's side of the conversation: it takes the command the saga sends.
    public sealed class StockService : IMessageHandler<ReserveStock>
    {
        public ValueTask HandleAsync(ReserveStock message, MessageContext context, CancellationToken cancellationToken) => ValueTask.CompletedTask;
    }

    public sealed class OrderState
    {
        public decimal Total { get; set; }

        public List<int> Lines { get; set; } = [];
    }

    private static SagaStateMachine<OrderState> Machine(MissingInstance whenMissing = MissingInstance.Ignore) =>
        SagaStateMachine.Create<OrderState>("sm-orders", m => m
            .Correlate<OrderPlaced>(e => e.OrderId)
            .Correlate<StockReserved>(e => e.OrderId, whenMissing)
            .Correlate<PaymentTaken>(e => e.OrderId, whenMissing)
            .Correlate<LineAdded>(e => e.OrderId)
            .Initially<OrderPlaced>("Reserving", async (saga, placed) =>
            {
                saga.Data.Total = placed.Total;
                await saga.SendAsync(new ReserveStock(placed.OrderId));
            })
            .During("Reserving", s => s
                .When<StockReserved>("Charging")
                .When<LineAdded>("Reserving", (saga, line) =>
                {
                    saga.Data.Lines.Add(line.Line);
                    return ValueTask.CompletedTask;
                }))
            .During("Charging", s => s.When<PaymentTaken>("Completed"))
            .Final("Completed"));

    private static Task<ReliabilityHost> StartAsync(SagaStateMachine<OrderState> machine, int concurrency = 2, bool defaultRetries = false) =>
        ReliabilityHost.StartAsync(
            h =>
            {
                h.AddMessageType<OrderPlaced>().AddMessageType<StockReserved>().AddMessageType<PaymentTaken>().AddMessageType<LineAdded>().AddMessageType<ReserveStock>()
                    .AddSaga(machine)
                    .AddHandler<StockService>();
                if (!defaultRetries)
                {
                    h.ConfigureRetries(r => r.Immediate(50).Delayed(0, TimeSpan.Zero, TimeSpan.Zero));
                }
            },
            concurrency: concurrency);

    // A cart opened again and again: each CartOpened adds a line to its one instance, correlated as `correlate` says.
    private static SagaStateMachine<OrderState> CartMachine(string name, Action<SagaStateMachineBuilder<OrderState>> correlate) =>
        SagaStateMachine.Create<OrderState>(name, m =>
        {
            correlate(m);
            m.Initially<CartOpened>("Open", AddLine)
                .During("Open", s => s.When<CartOpened>("Open", AddLine));
        });

    private static ValueTask AddLine(SagaEventContext<OrderState> saga, CartOpened opened)
    {
        saga.Data.Lines.Add(saga.Data.Lines.Count);
        return ValueTask.CompletedTask;
    }

    private static async Task<SagaInstance> WaitForStateAsync(ReliabilityHost host, string id, string state) =>
        await Eventually.ValueAsync(
            async () => await host.Get<ISagaStore>().LoadAsync("sm-orders", id) is { } instance && instance.State == state ? instance : null,
            $"instance {id} reaches {state}");

    // The host's one dead letter: never retried (one attempt), its reason holding `reason`.
    private static async Task AssertDeadLetteredAtOnceAsync(ReliabilityHost host, string reason)
    {
        var deadLetter = Assert.Single(await host.WaitForDeadLettersAsync());
        Assert.Equal(DeadLetterCause.NotRetryable, deadLetter.Cause);
        Assert.Equal(1, deadLetter.AttemptCount);
        Assert.Contains(reason, deadLetter.ErrorMessage, StringComparison.Ordinal);
    }

    [Fact]
    public async Task EventsMoveTheInstanceThroughItsStates_ToAFinalState_SendingWhatTheActionsSend()
    {
        await using var host = await StartAsync(Machine());
        var bus = host.Get<IMessageBus>();

        await bus.SendAsync(new OrderPlaced("o-1", 42.5m));
        var reserving = await WaitForStateAsync(host, "o-1", "Reserving");
        await bus.SendAsync(new StockReserved("o-1"));
        await WaitForStateAsync(host, "o-1", "Charging");
        await bus.SendAsync(new PaymentTaken("o-1"));
        var completed = await WaitForStateAsync(host, "o-1", "Completed");

        Assert.Equal(SagaStatus.Running, reserving.Status);
        Assert.Equal(SagaStatus.Completed, completed.Status);
        Assert.Contains("\"total\":42.5", Encoding.UTF8.GetString(completed.Data.Span), StringComparison.Ordinal);
        // The command the action sent carries the conversation of the event that caused it.
        var placed = host.Transport.Sent.Single(s => s.Envelope.MessageType == "sm-order-placed").Envelope;
        var sent = host.Transport.Sent.Single(s => s.Envelope.MessageType == "sm-reserve-stock").Envelope;
        Assert.NotNull(placed.CorrelationId);
        Assert.Equal(placed.CorrelationId, sent.CorrelationId);
    }

    [Fact]
    public async Task AnEventWithNoInstance_ThatDoesNotStartOne_IsIgnored_OrDeadLetteredAsConfigured()
    {
        await using (var ignoring = await StartAsync(Machine(MissingInstance.Ignore)))
        {
            await ignoring.Get<IMessageBus>().SendAsync(new StockReserved("ghost"));
            await ignoring.Get<IMessageBus>().SendAsync(new OrderPlaced("after", 1));
            await WaitForStateAsync(ignoring, "after", "Reserving");
            Assert.Null(await ignoring.Get<ISagaStore>().LoadAsync("sm-orders", "ghost"));
            Assert.Empty(await ignoring.DeadLetters.ListAsync(new DeadLetterQuery()));
        }

        await using var strict = await StartAsync(Machine(MissingInstance.DeadLetter));
        await strict.Get<IMessageBus>().SendAsync(new StockReserved("ghost"));
        var deadLetter = Assert.Single(await strict.WaitForDeadLettersAsync());
        Assert.Equal(DeadLetterCause.NotRetryable, deadLetter.Cause);
        Assert.Contains("has no instance 'ghost'", deadLetter.ErrorMessage, StringComparison.Ordinal);
        Assert.Null(await strict.Get<ISagaStore>().LoadAsync("sm-orders", "ghost"));
    }

    [Fact]
    public async Task AnEventTheCurrentStateDoesNotExpect_ChangesNothing()
    {
        await using var host = await StartAsync(Machine());
        var bus = host.Get<IMessageBus>();
        await bus.SendAsync(new OrderPlaced("o-2", 5));
        var before = await WaitForStateAsync(host, "o-2", "Reserving");

        // One at a time: the ignored event must be handled (and logged as ignored) before the expected one arrives.
        await bus.SendAsync(new PaymentTaken("o-2"));
        await Eventually.UntilAsync(() => host.Logs.Entries.Any(e => e.EventId == 1330 && e.Message.Contains("o-2", StringComparison.Ordinal)), "the unexpected event is ignored");
        Assert.Equal(before.Version, (await host.Get<ISagaStore>().LoadAsync("sm-orders", "o-2"))!.Version);
        await bus.SendAsync(new StockReserved("o-2"));
        var after = await WaitForStateAsync(host, "o-2", "Charging");

        Assert.Equal(before.Version + 1, after.Version);
    }

    [Fact]
    public async Task ConcurrentEventsForOneInstance_AllLand_WithNoLostUpdate()
    {
        await using var host = await StartAsync(Machine(), concurrency: 8);

        var instance = await AddLinesConcurrentlyAsync(host, "o-3", 40);

        Assert.Equal("Reserving", instance.State);
    }

    // Starts the instance, sends it `count` LineAdded at once, waits until every one landed, and checks that none was lost.
    private static async Task<SagaInstance> AddLinesConcurrentlyAsync(ReliabilityHost host, string id, int count)
    {
        var bus = host.Get<IMessageBus>();
        await bus.SendAsync(new OrderPlaced(id, 1));
        await WaitForStateAsync(host, id, "Reserving");

        await Task.WhenAll(Enumerable.Range(1, count).Select(i => bus.SendAsync(new LineAdded(id, i)).AsTask()));
        var instance = await Eventually.ValueAsync(
            async () => await host.Get<ISagaStore>().LoadAsync("sm-orders", id) is { } done && done.Version == count + 1 ? done : null,
            $"all {count} lines land");

        var lines = System.Text.Json.JsonDocument.Parse(instance.Data).RootElement.GetProperty("lines").EnumerateArray().Select(l => l.GetInt32()).Order();
        Assert.Equal(Enumerable.Range(1, count), lines);
        return instance;
    }

    [Fact]
    public async Task ConcurrentEventsForOneInstance_UnderTheDefaultRetryPolicy_AllLandAtOnce_WithoutSpendingTheRetryBudget()
    {
        // Each lost version conflict used to count as a failed attempt: with the default 2 immediate retries, a message
        // that lost 3 in a row waited for a delayed redelivery (the fake clock never moves here), and one that lost 6 was
        // dead-lettered, although nothing was wrong with it.
        var machine = SagaStateMachine.Create<OrderState>("sm-orders", m => m
            .Correlate<OrderPlaced>(e => e.OrderId)
            .Correlate<LineAdded>(e => e.OrderId)
            .Initially<OrderPlaced>("Reserving")
            .During("Reserving", s => s
                .When<LineAdded>("Reserving", async (saga, line) =>
                {
                    // Widens the window between load and save, so concurrent attempts do conflict.
                    await Task.Yield();
                    saga.Data.Lines.Add(line.Line);
                })));
        await using var host = await StartAsync(machine, concurrency: 8, defaultRetries: true);

        await AddLinesConcurrentlyAsync(host, "o-9", 50);

        Assert.Empty(await host.DeadLetters.ListAsync(new DeadLetterQuery()));
        // The conflicts happened, and show in the logs as conflicts, not as failed attempts.
        Assert.Contains(host.Logs.Entries, e => e.EventId == 2014);
        Assert.DoesNotContain(host.Logs.Entries, e => e.EventId == 2001);
    }

    [Fact]
    public async Task ATransitionRetriedAfterAConflict_WithoutAnOutbox_SendsItsCommandOnce()
    {
        // The StockReserved transition sends a command; while its first attempt runs, a LineAdded for the same instance
        // commits first (a second consumer), so that attempt fails at its commit and runs again. Only the attempt that
        // committed may send: sent before the commit, the command would leave twice (and a reply to it could arrive while
        // the instance is still in the state before, and be ignored).
        ReliabilityHost? started = null;
        var attempts = 0;
        var machine = SagaStateMachine.Create<OrderState>("sm-orders", m => m
            .Correlate<OrderPlaced>(e => e.OrderId)
            .Correlate<StockReserved>(e => e.OrderId)
            .Correlate<LineAdded>(e => e.OrderId)
            .Initially<OrderPlaced>("Reserving")
            .During("Reserving", s => s
                .When<LineAdded>("Reserving", (saga, line) =>
                {
                    saga.Data.Lines.Add(line.Line);
                    return ValueTask.CompletedTask;
                })
                .When<StockReserved>("Charging", async (saga, reserved) =>
                {
                    if (Interlocked.Increment(ref attempts) == 1)
                    {
                        var host = started!;
                        await host.Get<IMessageBus>().SendAsync(new LineAdded(reserved.OrderId, 1));
                        await Eventually.UntilAsync(async () => (await host.Get<ISagaStore>().LoadAsync("sm-orders", reserved.OrderId))!.Version > 1, "the other transition commits first");
                    }

                    await saga.SendAsync(new ReserveStock(reserved.OrderId));
                }))
            .Final("Charging"));
        await using var host = await StartAsync(machine, concurrency: 4);
        started = host;
        var bus = host.Get<IMessageBus>();
        await bus.SendAsync(new OrderPlaced("o-5", 1));
        await WaitForStateAsync(host, "o-5", "Reserving");

        await bus.SendAsync(new StockReserved("o-5"));
        var charging = await WaitForStateAsync(host, "o-5", "Charging");

        Assert.Equal(2, attempts);
        Assert.Contains("\"lines\":[1]", Encoding.UTF8.GetString(charging.Data.Span), StringComparison.Ordinal);

        // Sent once the commit is done, which may be just after the state is seen; the failed attempt sent nothing.
        await Eventually.UntilAsync(() => host.Transport.Sent.Any(s => s.Envelope.MessageType == "sm-reserve-stock"), "the committed transition sends its command");
        Assert.Single(host.Transport.Sent, s => s.Envelope.MessageType == "sm-reserve-stock");
    }

    [Fact]
    public async Task AnEventForAnInstanceWhoseDataNoLongerReads_IsDeadLetteredAtOnce_NamingTheInstance_AndChangesNothing()
    {
        // Stored by an earlier shape of the data (Total was a string then): every attempt would fail the same way.
        await using var host = await StartAsync(Machine());
        var store = host.Get<ISagaStore>();
        var version = await store.SaveAsync(new SagaInstance
        {
            SagaType = "sm-orders",
            Id = "o-6",
            Status = SagaStatus.Running,
            State = "Reserving",
            Data = """{"total":"forty-two","lines":[]}"""u8.ToArray(),
        });

        await host.Get<IMessageBus>().SendAsync(new StockReserved("o-6"));
        await AssertDeadLetteredAtOnceAsync(host, "Saga 'sm-orders' instance 'o-6' (state 'Reserving') holds data that cannot be read as OrderState");
        Assert.Equal(version, (await store.LoadAsync("sm-orders", "o-6"))!.Version);
    }

    [Fact]
    public async Task AnEventWhoseCorrelationIdNoStoreCanKeep_IsDeadLetteredAtOnce_NamingTheReason_AndCreatesNothing()
    {
        // Longer than a key may be, or cut inside an emoji (the correlation takes the first 7 characters of "order-😀"):
        // every attempt failed the same way in the store, spending the whole retry budget first, and SQLite kept a cut id
        // as U+FFFD, one instance for every id cut the same way.
        var machine = SagaStateMachine.Create<OrderState>("sm-orders", m => m
            .Correlate<OrderPlaced>(e => e.OrderId.Length == 8 ? e.OrderId[..7] : e.OrderId)
            .Initially<OrderPlaced>("Placed")
            .Final("Placed"));
        await using var host = await StartAsync(machine);
        var bus = host.Get<IMessageBus>();

        await bus.SendAsync(new OrderPlaced(new string('o', SagaValidation.MaxKeyLength + 1), 1m));
        await bus.SendAsync(new OrderPlaced("order-\U0001F600", 1m));
        var deadLetters = await host.WaitForDeadLettersAsync(count: 2);

        Assert.All(deadLetters, d =>
        {
            Assert.Equal(DeadLetterCause.NotRetryable, d.Cause);
            Assert.Equal(1, d.AttemptCount);
            Assert.Contains("OrderPlaced has a correlation id that cannot be an instance id of saga 'sm-orders'", d.ErrorMessage, StringComparison.Ordinal);
        });
        Assert.Contains(deadLetters, d => d.ErrorMessage.Contains($"at most {SagaValidation.MaxKeyLength} characters", StringComparison.Ordinal));
        Assert.Contains(deadLetters, d => d.ErrorMessage.Contains("half of a surrogate pair", StringComparison.Ordinal));
        Assert.Empty(await host.Get<ISagaStore>().ListAsync(new SagaQuery { SagaType = "sm-orders" }));
    }

    [Fact]
    public async Task AnEventForAnInstanceInAStateTheMachineNoLongerDeclares_IsDeadLetteredAtOnce_NamingTheState_AndChangesNothing()
    {
        // Saved in "Picking" by an earlier machine (renamed since): every event for it was acked as "not handled in state
        // 'Picking'", an Information log, and lost, while the instance stayed unfinished with nothing able to move it on.
        await using var host = await StartAsync(Machine());
        var store = host.Get<ISagaStore>();
        var version = await store.SaveAsync(new SagaInstance
        {
            SagaType = "sm-orders", Id = "o-7", Status = SagaStatus.Running, State = "Picking", Data = """{"total":1,"lines":[]}"""u8.ToArray(),
        });

        await host.Get<IMessageBus>().SendAsync(new StockReserved("o-7"));
        await AssertDeadLetteredAtOnceAsync(host, "Saga 'sm-orders' instance 'o-7' is in state 'Picking', which the machine does not declare");
        Assert.Equal(version, (await store.LoadAsync("sm-orders", "o-7"))!.Version);
    }

    [Fact]
    public async Task AnEventWhoseCorrelationThrows_IsDeadLetteredAtOnce_NamingTheEventAndTheSaga()
    {
        // The correlation reads through a property the message lacks: every attempt throws the same way. It spent the whole
        // retry budget first, and its dead letter said only "NullReferenceException", not which saga or event.
        var machine = SagaStateMachine.Create<OrderState>("sm-orders", m => m
            .Correlate<ShipmentBooked>(e => e.Order!.OrderId)
            .Initially<ShipmentBooked>("Booked")
            .Final("Booked"));
        await using var host = await ReliabilityHost.StartAsync(
            h => h.AddMessageType<ShipmentBooked>().AddSaga(machine).ConfigureRetries(r => r.Immediate(3).Delayed(0, TimeSpan.Zero, TimeSpan.Zero)));

        await host.Get<IMessageBus>().SendAsync(new ShipmentBooked(Order: null));
        await AssertDeadLetteredAtOnceAsync(host, "The correlation of ShipmentBooked for saga 'sm-orders' failed: NullReferenceException");
        Assert.Empty(await host.Get<ISagaStore>().ListAsync(new SagaQuery { SagaType = "sm-orders" }));
    }

    [Theory]
    [InlineData("D")]
    [InlineData("N")]
    [InlineData("B")]
    [InlineData("blank")]
    public async Task AnEventWhoseCorrelationIsTheEmptyGuidOrBlank_IsDeadLetteredAtOnce_NamingTheEventAndTheSaga_AndCreatesNothing(string format)
    {
        // A message missing its id correlates by its default Guid: every such message went to one instance, 00000000-...,
        // created by the first and shared by all the others.
        var machine = CartMachine("sm-carts", m => m.Correlate<CartOpened>(e => format == "blank" ? " " : e.CartId.ToString(format)));
        await using var host = await ReliabilityHost.StartAsync(
            h => h.AddMessageType<CartOpened>().AddSaga(machine).ConfigureRetries(r => r.Immediate(3).Delayed(0, TimeSpan.Zero, TimeSpan.Zero)));
        var bus = host.Get<IMessageBus>();

        await bus.SendAsync(new CartOpened(Guid.Empty));
        await bus.SendAsync(new CartOpened(default));
        var deadLetters = await host.WaitForDeadLettersAsync(count: 2);

        Assert.All(deadLetters, d =>
        {
            Assert.Equal(DeadLetterCause.NotRetryable, d.Cause);
            Assert.Equal(1, d.AttemptCount);
            Assert.Contains("CartOpened has no correlation id for saga 'sm-carts'", d.ErrorMessage, StringComparison.Ordinal);
        });
        Assert.Empty(await host.Get<ISagaStore>().ListAsync(new SagaQuery { SagaType = "sm-carts" }));
    }

    [Fact]
    public async Task ACorrelationByGuid_NamesTheInstanceByTheGuidsTextForm_AndDeadLettersTheEmptyGuid()
    {
        var machine = CartMachine("sm-guid-carts", m => m.Correlate<CartOpened>(e => e.CartId));
        await using var host = await ReliabilityHost.StartAsync(h => h.AddMessageType<CartOpened>().AddSaga(machine));
        var bus = host.Get<IMessageBus>();
        var cart = Guid.NewGuid();

        await bus.SendAsync(new CartOpened(cart));
        await Eventually.ValueAsync(async () => await host.Get<ISagaStore>().LoadAsync("sm-guid-carts", cart.ToString()), "the cart's instance is created");
        await bus.SendAsync(new CartOpened(cart));
        await bus.SendAsync(new CartOpened(Guid.Empty));

        var deadLetter = Assert.Single(await host.WaitForDeadLettersAsync());
        Assert.Contains("CartOpened has no correlation id for saga 'sm-guid-carts'", deadLetter.ErrorMessage, StringComparison.Ordinal);
        var instance = await Eventually.ValueAsync(
            async () => await host.Get<ISagaStore>().LoadAsync("sm-guid-carts", cart.ToString()) is { Version: >= 2 } loaded ? loaded : null,
            "the second event reaches the cart's instance");
        Assert.Equal(cart.ToString("D"), instance.Id);
        Assert.Single(await host.Get<ISagaStore>().ListAsync(new SagaQuery { SagaType = "sm-guid-carts" }));
    }

    [Fact]
    public void ABadMachine_IsRejectedWhenBuilt_WithEveryReason()
    {
        var error = Assert.Throws<InvalidSagaDefinitionException>(() => SagaStateMachine.Create<OrderState>("bad", m => m
            .Correlate<OrderPlaced>(e => e.OrderId)
            .Initially<OrderPlaced>("Reserving")
            .During("Reserving", s => s.When<StockReserved>("Shipping"))
            .During("Orphan", s => s.When<PaymentTaken>("Completed"))
            .Final("Completed")));
        var empty = Assert.Throws<InvalidSagaDefinitionException>(() => SagaStateMachine.Create<OrderState>("empty", _ => { }));

        Assert.Contains("Event StockReserved has no correlation; declare it with Correlate.", error.Problems);
        Assert.Contains("Event PaymentTaken has no correlation; declare it with Correlate.", error.Problems);
        Assert.Contains("State 'Shipping' is entered but has no transitions and is not final.", error.Problems);
        Assert.Contains("State 'Orphan' is unreachable.", error.Problems);
        Assert.Contains("State 'Completed' is unreachable.", error.Problems);
        Assert.Contains("No event starts the machine; declare one with Initially.", empty.Problems);
    }

    [Fact]
    public void AMissingInstancePolicy_ThatContradictsInitially_IsRejectedWhenBuilt()
    {
        var error = Assert.Throws<InvalidSagaDefinitionException>(() => SagaStateMachine.Create<OrderState>("policies", m => m
            .Correlate<OrderPlaced>(e => e.OrderId, MissingInstance.Ignore)
            .Correlate<LineAdded>(e => e.OrderId, MissingInstance.DeadLetter)
            .Correlate<StockReserved>(e => e.OrderId, MissingInstance.Create)
            .Initially<OrderPlaced>("Reserving")
            .Initially<LineAdded>("Reserving")
            .During("Reserving", s => s.When<StockReserved>("Completed"))
            .Final("Completed")));

        Assert.Equal(3, error.Problems.Count);
        Assert.Contains("Event OrderPlaced starts the machine (Initially) but is told to ignore a missing instance; leave its policy unset or use Create.", error.Problems);
        Assert.Contains("Event LineAdded starts the machine (Initially) but is told to dead-letter a missing instance; leave its policy unset or use Create.", error.Problems);
        Assert.Contains("Event StockReserved is to create missing instances but has no Initially transition to create them with.", error.Problems);
    }

    [Fact]
    public async Task AnEventWhosePolicyIsCreate_CreatesAMissingInstance_AndTakesItsStateTransitionOnceItExists()
    {
        // LineAdded both creates an order it finds missing (it arrived first) and, once the order exists, adds to it.
        var machine = SagaStateMachine.Create<OrderState>("sm-orders", m => m
            .Correlate<OrderPlaced>(e => e.OrderId)
            .Correlate<LineAdded>(e => e.OrderId, MissingInstance.Create)
            .Correlate<StockReserved>(e => e.OrderId)
            .Correlate<PaymentTaken>(e => e.OrderId)
            .Initially<OrderPlaced>("Reserving")
            .Initially<LineAdded>("Reserving", (saga, line) =>
            {
                saga.Data.Lines.Add(-line.Line);
                return ValueTask.CompletedTask;
            })
            .During("Reserving", s => s
                .When<LineAdded>("Reserving", (saga, line) =>
                {
                    saga.Data.Lines.Add(line.Line);
                    return ValueTask.CompletedTask;
                })
                .When<StockReserved>("Charging"))
            .During("Charging", s => s.When<PaymentTaken>("Completed"))
            .Final("Completed"));
        await using var host = await StartAsync(machine, concurrency: 1);
        var bus = host.Get<IMessageBus>();

        await bus.SendAsync(new LineAdded("early", 1));
        var created = await WaitForStateAsync(host, "early", "Reserving");
        await bus.SendAsync(new LineAdded("early", 2));
        await Eventually.UntilAsync(async () => (await host.Get<ISagaStore>().LoadAsync("sm-orders", "early"))!.Version > created.Version, "the second line is added");

        var instance = (await host.Get<ISagaStore>().LoadAsync("sm-orders", "early"))!;
        var lines = System.Text.Json.JsonDocument.Parse(instance.Data).RootElement.GetProperty("lines").EnumerateArray().Select(l => l.GetInt32());
        Assert.Equal([-1, 2], lines);
        Assert.Empty(await host.DeadLetters.ListAsync(new DeadLetterQuery()));
    }
}
