using Herald.Conformance;
using Herald.Handling;
using Herald.Messages;
using Herald.Persistence;
using Herald.Sagas;
using Herald.Tests.Reliability;
using Microsoft.Extensions.DependencyInjection;

namespace Herald.Tests.Sagas;

/// <summary>State-machine saga timeouts: they fire once, a cancelled one never fires, and a rescheduled one fires at its new time only.</summary>
public sealed class SagaTimeoutTests
{
    private static readonly TimeSpan PaymentWindow = TimeSpan.FromMinutes(10);

    [MessageType("st-order-placed")]
    public sealed record OrderPlaced(string OrderId);

    [MessageType("st-payment-taken")]
    public sealed record PaymentTaken(string OrderId);

    [MessageType("st-payment-timed-out")]
    public sealed record PaymentTimedOut(string OrderId);

    [MessageType("st-shipped")]
    public sealed record Shipped(string OrderId);

    public sealed class OrderState
    {
        public int TimeoutsSeen { get; set; }
    }

    // "Paid" still handles the timeout (into "Expired"), so a cancelled timeout that fired would show in the state.
    private static SagaStateMachine<OrderState> Machine() =>
        SagaStateMachine.Create<OrderState>("st-orders", m => PlacedAwaitingPayment(m)
            .During("AwaitingPayment", s => s
                .When<PaymentTaken>("Paid", (saga, _) =>
                {
                    Assert.True(saga.CancelTimeout("payment"));
                    return ValueTask.CompletedTask;
                })
                .When<PaymentTimedOut>("Expired", Count))
            .During("Paid", s => s
                .When<Shipped>("Shipped")
                .When<PaymentTimedOut>("Expired", Count))
            .Final("Shipped", "Expired"));

    // Every event correlated by order id; an order placed waits for its payment, with a payment timeout scheduled.
    private static SagaStateMachineBuilder<OrderState> PlacedAwaitingPayment(SagaStateMachineBuilder<OrderState> m) => m
        .Correlate<OrderPlaced>(e => e.OrderId)
        .Correlate<PaymentTaken>(e => e.OrderId)
        .Correlate<PaymentTimedOut>(e => e.OrderId)
        .Correlate<Shipped>(e => e.OrderId)
        .Initially<OrderPlaced>("AwaitingPayment", async (saga, placed) =>
            await saga.ScheduleTimeoutAsync("payment", new PaymentTimedOut(placed.OrderId), PaymentWindow));

    private static ValueTask Count(SagaEventContext<OrderState> saga, PaymentTimedOut _)
    {
        saga.Data.TimeoutsSeen++;
        return ValueTask.CompletedTask;
    }

    private static Task<ReliabilityHost> StartAsync(SagaStateMachine<OrderState>? machine = null) =>
        ReliabilityHost.StartAsync(h => h
            .AddMessageType<OrderPlaced>().AddMessageType<PaymentTaken>().AddMessageType<PaymentTimedOut>().AddMessageType<Shipped>()
            .AddSaga(machine ?? Machine()));

    // Orders whose payment timeout expires them; the first transition runs placed, given the started host.
    private static async Task<ReliabilityHost> StartSchedulingAsync(Func<ReliabilityHost, SagaEventContext<OrderState>, OrderPlaced, Task> placed)
    {
        ReliabilityHost? running = null;
        var machine = SagaStateMachine.Create<OrderState>("st-orders", m => m
            .Correlate<OrderPlaced>(e => e.OrderId)
            .Correlate<PaymentTimedOut>(e => e.OrderId)
            .Initially<OrderPlaced>("AwaitingPayment", async (saga, message) => await placed(running!, saga, message))
            .During("AwaitingPayment", s => s.When<PaymentTimedOut>("Expired", Count))
            .Final("Expired"));
        return running = await ReliabilityHost.StartAsync(h => h
            .AddMessageType<OrderPlaced>().AddMessageType<PaymentTimedOut>()
            .AddSaga(machine));
    }

    private static Task<SagaInstance> StateAsync(ReliabilityHost host, string id, string state) =>
        Eventually.ValueAsync(
            async () => await host.Get<ISagaStore>().LoadAsync("st-orders", id) is { } instance && instance.State == state ? instance : null,
            $"instance {id} reaches {state}");

    // The transition's commit shows in the store before its commit callback sends the delayed timeout, and the transport counts
    // the delay from that send: a clock advanced in between would leave the timeout due later than the test waits for.
    private static async Task<SagaInstance> AwaitingPaymentAsync(ReliabilityHost host, string id)
    {
        var waiting = await StateAsync(host, id, "AwaitingPayment");
        await Eventually.UntilAsync(() => TimeoutsSent(host) >= 1, $"the payment timeout of {id} is sent");
        return waiting;
    }

    private static Task IgnoredAsync(ReliabilityHost host, string id, int count = 1) =>
        Eventually.UntilAsync(
            () => host.Logs.Entries.Count(e => e.EventId == 1330 && e.Message.Contains(id, StringComparison.Ordinal) && e.Message.Contains("timeout", StringComparison.Ordinal)) >= count,
            $"the stale timeout of {id} is delivered and ignored");

    [Fact]
    public async Task AScheduledTimeout_IsHeldByTheInstance_AndFiresOnce_AfterItsDelay()
    {
        await using var host = await StartAsync();
        await host.Get<IMessageBus>().SendAsync(new OrderPlaced("o-1"));
        var waiting = await AwaitingPaymentAsync(host, "o-1");
        var timeout = Assert.Single(waiting.Timeouts);
        Assert.Equal("payment", timeout.Name);
        Assert.Equal(host.Clock.GetUtcNow() + PaymentWindow, timeout.DueAt);
        Assert.Equal(timeout, Assert.Single(await host.Get<SagaTimeouts>().ListAsync("st-orders", "o-1")));

        host.Clock.Advance(PaymentWindow - TimeSpan.FromSeconds(1));
        Assert.Equal("AwaitingPayment", (await host.Get<ISagaStore>().LoadAsync("st-orders", "o-1"))!.State);

        host.Clock.Advance(TimeSpan.FromSeconds(1));
        var expired = await StateAsync(host, "o-1", "Expired");
        Assert.Equal(1, SagaData.Deserialize<OrderState>(expired.Data).TimeoutsSeen);
        Assert.Empty(expired.Timeouts);
    }

    [Fact]
    public async Task ATimeoutCancelledByATransition_NeverFires()
    {
        await using var host = await StartAsync();
        var bus = host.Get<IMessageBus>();
        await bus.SendAsync(new OrderPlaced("o-2"));
        await AwaitingPaymentAsync(host, "o-2");
        await bus.SendAsync(new PaymentTaken("o-2"));
        var paid = await StateAsync(host, "o-2", "Paid");
        Assert.Empty(paid.Timeouts);

        host.Clock.Advance(PaymentWindow + TimeSpan.FromMinutes(1));
        await IgnoredAsync(host, "o-2");

        var after = (await host.Get<ISagaStore>().LoadAsync("st-orders", "o-2"))!;
        Assert.Equal("Paid", after.State);
        Assert.Equal(paid.Version, after.Version);
    }

    [Fact]
    public async Task ATimeoutFiringWhileItsInstanceCompletes_LosesAtItsCommit_AndDoesNotResurrectTheInstance()
    {
        // The timeout's delivery loads the instance still awaiting payment (holding the timeout), and its transition runs
        // while the payment's transition completes the instance on the other consumer and commits first.
        var entered = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var runs = 0;
        var machine = SagaStateMachine.Create<OrderState>("st-orders", m => PlacedAwaitingPayment(m)
            .During("AwaitingPayment", s => s
                .When<PaymentTaken>("Shipped")
                .When<PaymentTimedOut>("Expired", async (saga, timedOut) =>
                {
                    if (Interlocked.Increment(ref runs) == 1)
                    {
                        entered.SetResult();
                        await release.Task;
                    }

                    await Count(saga, timedOut);
                }))
            .Final("Shipped", "Expired"));
        await using var host = await StartAsync(machine);
        var bus = host.Get<IMessageBus>();
        await bus.SendAsync(new OrderPlaced("o-race"));
        await AwaitingPaymentAsync(host, "o-race");

        host.Clock.Advance(PaymentWindow);
        await entered.Task.WaitAsync(TimeSpan.FromSeconds(30));
        await bus.SendAsync(new PaymentTaken("o-race"));
        var shipped = await StateAsync(host, "o-race", "Shipped");
        release.SetResult();
        await IgnoredAsync(host, "o-race");

        var after = (await host.Get<ISagaStore>().LoadAsync("st-orders", "o-race"))!;
        Assert.Equal(SagaStatus.Completed, after.Status);
        Assert.Equal("Shipped", after.State);
        Assert.Equal(shipped.Version, after.Version);
        Assert.Equal(0, SagaData.Deserialize<OrderState>(after.Data).TimeoutsSeen);
        Assert.Empty(after.Timeouts);
        Assert.Empty(await host.DeadLetters.ListAsync(new Herald.Reliability.DeadLetters.DeadLetterQuery()));
    }

    [Fact]
    public async Task ATimeoutFiringInAStateThatDoesNotHandleIt_IsIgnored_AndNoLongerHeldByTheInstance()
    {
        // "Packing" keeps the payment timeout (the transition does not cancel it) but has no transition for it. Ignored,
        // it used to stay in the instance's timeouts: listed as pending forever, and a reschedule sent it once more.
        var machine = SagaStateMachine.Create<OrderState>("st-orders", m => PlacedAwaitingPayment(m)
            .During("AwaitingPayment", s => s
                .When<PaymentTaken>("Packing")
                .When<PaymentTimedOut>("Expired", Count))
            .During("Packing", s => s.When<Shipped>("Shipped"))
            .Final("Shipped", "Expired"));
        await using var host = await StartAsync(machine);
        var bus = host.Get<IMessageBus>();
        await bus.SendAsync(new OrderPlaced("o-20"));
        await AwaitingPaymentAsync(host, "o-20");
        await bus.SendAsync(new PaymentTaken("o-20"));
        Assert.Single((await StateAsync(host, "o-20", "Packing")).Timeouts);

        host.Clock.Advance(PaymentWindow);
        var timeouts = host.Get<SagaTimeouts>();
        await Eventually.UntilAsync(async () => (await timeouts.ListAsync("st-orders", "o-20")).Count == 0, "the fired timeout leaves the instance");

        var after = (await host.Get<ISagaStore>().LoadAsync("st-orders", "o-20"))!;
        Assert.Equal("Packing", after.State);
        Assert.Equal(0, SagaData.Deserialize<OrderState>(after.Data).TimeoutsSeen);
        Assert.Null(await timeouts.RescheduleAsync("st-orders", "o-20", "payment", TimeSpan.Zero));
        Assert.Equal(1, TimeoutsSent(host));
    }

    [Fact]
    public async Task ATimeoutCancelledFromOutside_NeverFires()
    {
        await using var host = await StartAsync();
        await host.Get<IMessageBus>().SendAsync(new OrderPlaced("o-3"));
        await AwaitingPaymentAsync(host, "o-3");

        Assert.True(await host.Get<SagaTimeouts>().CancelAsync("st-orders", "o-3", "payment"));
        Assert.False(await host.Get<SagaTimeouts>().CancelAsync("st-orders", "o-3", "payment"));
        Assert.Empty(await host.Get<SagaTimeouts>().ListAsync("st-orders", "o-3"));

        host.Clock.Advance(PaymentWindow + TimeSpan.FromMinutes(1));
        await IgnoredAsync(host, "o-3");
        Assert.Equal("AwaitingPayment", (await host.Get<ISagaStore>().LoadAsync("st-orders", "o-3"))!.State);
    }

    [Fact]
    public async Task ATimeoutCancelledInAUnitOfWorkThatRollsBack_StaysAndFires()
    {
        await using var host = await StartAsync();
        await host.Get<IMessageBus>().SendAsync(new OrderPlaced("o-5"));
        await AwaitingPaymentAsync(host, "o-5");

        // The cancellation joins the running unit of work, which then fails: it must not hold.
        await Assert.ThrowsAsync<InvalidOperationException>(() => host.Get<UnitOfWorkRunner>().RunAsync(
            async (_, token) =>
            {
                Assert.True(await host.Get<SagaTimeouts>().CancelAsync("st-orders", "o-5", "payment", token));
                throw new InvalidOperationException("the caller fails after cancelling");
            }).AsTask());
        Assert.Single(await host.Get<SagaTimeouts>().ListAsync("st-orders", "o-5"));

        host.Clock.Advance(PaymentWindow + TimeSpan.FromMinutes(1));
        await StateAsync(host, "o-5", "Expired");
    }

    [Fact]
    public async Task ATimeoutDueAtOnce_WithoutAnOutbox_FiresOnceItsTransitionCommitted()
    {
        // Sent at once, the timeout reached the other consumer while its transition had not committed: the instance did
        // not hold it yet, so it was ignored for good, and the instance then held a timeout that never fired.
        await using var host = await StartSchedulingAsync(async (running, saga, placed) =>
        {
            await saga.ScheduleTimeoutAsync("payment", new PaymentTimedOut(placed.OrderId), TimeSpan.Zero);
            if (TimeoutsSent(running) > 0)
            {
                await IgnoredAsync(running, placed.OrderId);
            }
        });

        await host.Get<IMessageBus>().SendAsync(new OrderPlaced("o-6"));
        var expired = await StateAsync(host, "o-6", "Expired");
        Assert.Equal(1, SagaData.Deserialize<OrderState>(expired.Data).TimeoutsSeen);
    }

    [Fact]
    public async Task ATimeout_WithoutAnOutbox_FiresAtItsDueTime_EvenWhenItsTransitionCommitsLate()
    {
        // Without an outbox the timeout leaves from the commit; it used to ask the transport for its whole delay then, so a
        // transition that took 4 minutes after scheduling it fired it 4 minutes after the due time the instance holds.
        await using var host = await StartSchedulingAsync(async (running, saga, placed) =>
        {
            await saga.ScheduleTimeoutAsync("payment", new PaymentTimedOut(placed.OrderId), PaymentWindow);
            running.Clock.Advance(TimeSpan.FromMinutes(4));
        });

        await host.Get<IMessageBus>().SendAsync(new OrderPlaced("o-9"));
        var timeout = Assert.Single((await AwaitingPaymentAsync(host, "o-9")).Timeouts);
        var sent = Assert.Single(host.Transport.Sent, s => s.Envelope.MessageType == "st-payment-timed-out");
        Assert.Equal(timeout.DueAt - host.Clock.GetUtcNow(), host.Transport.Delays[sent.Envelope.MessageId]);

        host.Clock.SetUtcNow(timeout.DueAt);
        await StateAsync(host, "o-9", "Expired");
    }

    [Fact]
    public async Task ATimeoutRescheduledToNow_WithoutAnOutbox_FiresOnceTheSaveCommitted()
    {
        await using var host = await StartAsync();
        await host.Get<IMessageBus>().SendAsync(new OrderPlaced("o-7"));
        await AwaitingPaymentAsync(host, "o-7");
        var sent = TimeoutsSent(host);

        // The reschedule joins a unit of work that commits only after the moved timeout could have been handled: sent at
        // once, it found the instance still holding the old id, was ignored, and the new id it then held never fired.
        await host.Get<UnitOfWorkRunner>().RunAsync(async (_, token) =>
        {
            Assert.NotNull(await host.Get<SagaTimeouts>().RescheduleAsync("st-orders", "o-7", "payment", TimeSpan.Zero, token));
            if (TimeoutsSent(host) > sent)
            {
                await IgnoredAsync(host, "o-7");
            }
        });

        var expired = await StateAsync(host, "o-7", "Expired");
        Assert.Equal(1, SagaData.Deserialize<OrderState>(expired.Data).TimeoutsSeen);
    }

    [Fact]
    public async Task ATimeoutWhoseSendFailsAfterItsTransitionCommitted_IsLogged_TheEventIsNotRunAgain_AndARescheduleFiresIt()
    {
        await using var host = await StartAsync();
        host.Transport.FailSend = (_, envelope) => envelope.MessageType == "st-payment-timed-out" ? new InvalidOperationException("the broker is down") : null;
        await host.Get<IMessageBus>().SendAsync(new OrderPlaced("o-8"));
        await StateAsync(host, "o-8", "AwaitingPayment");
        await Eventually.UntilAsync(
            () => host.Logs.Entries.Any(e => e.EventId == 1331 && e.Message.Contains("o-8", StringComparison.Ordinal)),
            "the unsent timeout of o-8 is logged");

        // The transition committed, so its message is acked, not retried against the state it already moved to.
        await Eventually.UntilAsync(() => host.Transport.Settlements.Any(s => s.Envelope.MessageType == "st-order-placed"), "the order is settled");
        Assert.Equal(SettlementKind.Ack, Assert.Single(host.Transport.Settlements, s => s.Envelope.MessageType == "st-order-placed").Kind);

        host.Transport.FailSend = null;
        Assert.NotNull(await host.Get<SagaTimeouts>().RescheduleAsync("st-orders", "o-8", "payment", TimeSpan.Zero));
        await StateAsync(host, "o-8", "Expired");
    }

    [Fact]
    public async Task ATimeoutLostAfterItsTransitionCommitted_WithoutAnOutbox_IsSentAgainByTheSweep_AndFiresOnce()
    {
        // A crash right after the transition's commit, before its commit callback sent the timeout, leaves what this failed
        // send leaves: the event acked and an instance holding a timeout whose message was never sent. Nothing sent it
        // again, so the saga waited for good; the sweep now sends a timeout held StaleAfter past its due time again.
        await using var host = await StartAsync();
        host.Transport.FailSend = (_, envelope) => envelope.MessageType == "st-payment-timed-out" ? new InvalidOperationException("the process dies here") : null;
        await host.Get<IMessageBus>().SendAsync(new OrderPlaced("o-10"));
        var timeout = Assert.Single((await StateAsync(host, "o-10", "AwaitingPayment")).Timeouts);
        await Eventually.UntilAsync(
            () => host.Logs.Entries.Any(e => e.EventId == 1331 && e.Message.Contains("o-10", StringComparison.Ordinal)),
            "the timeout of o-10 is not sent");
        host.Transport.FailSend = null;

        host.Clock.SetUtcNow(timeout.DueAt + new SagaOptions().StaleAfter);
        var expired = await Eventually.ValueAsync(
            async ValueTask<SagaInstance?> () =>
            {
                if (await host.Get<ISagaStore>().LoadAsync("st-orders", "o-10") is { State: "Expired" } instance)
                {
                    return instance;
                }

                host.Clock.Advance(new SagaOptions().ResumeInterval);
                return null;
            },
            "the lost timeout of o-10 is sent again and fires");
        Assert.Equal(1, SagaData.Deserialize<OrderState>(expired.Data).TimeoutsSeen);
        Assert.Contains(host.Logs.Entries, e => e.EventId == 1333 && e.Message.Contains("o-10", StringComparison.Ordinal));
    }

    [Fact]
    public async Task ATimeoutWhoseDeliveryIsDeadLettered_IsSentAgainByTheSweepOnlyOnce_ThenLoggedOnce_NotResentForEver()
    {
        // The timeout's transition always throws, so each delivery ends as a dead letter while the instance goes on holding
        // the timeout: a sweep that sent it again every StaleAfter would fill the dead letters for ever.
        var machine = SagaStateMachine.Create<OrderState>("st-orders", m => PlacedAwaitingPayment(m)
            .During("AwaitingPayment", s => s.When<PaymentTimedOut>("Expired", (_, _) => throw new InvalidOperationException("the transition is broken")))
            .Final("Expired"));
        var stale = new SagaOptions().StaleAfter;
        await using var host = await ReliabilityHost.StartAsync(h => h
            .AddMessageType<OrderPlaced>().AddMessageType<PaymentTaken>().AddMessageType<PaymentTimedOut>().AddMessageType<Shipped>()
            .AddSaga(machine)
            .ConfigureSagas(o => o.ResumeInterval = TimeSpan.FromDays(20))); // only this test's sweeps below run
        var sweep = host.Host.Services.GetServices<Microsoft.Extensions.Hosting.IHostedService>().OfType<SagaResumeService>().Single();
        await host.Get<IMessageBus>().SendAsync(new OrderPlaced("o-11"));
        var timeout = Assert.Single((await AwaitingPaymentAsync(host, "o-11")).Timeouts);

        host.Clock.SetUtcNow(timeout.DueAt);
        await host.WaitForDeadLettersAsync(1, TimeSpan.FromSeconds(1));
        for (var sweeps = 1; sweeps <= 4; sweeps++)
        {
            host.Clock.Advance(stale);
            await sweep.SweepAsync(CancellationToken.None);
            await host.WaitForDeadLettersAsync(TimeoutsSent(host), TimeSpan.FromSeconds(1));
        }

        Assert.Equal(2, TimeoutsSent(host)); // scheduled, then sent again once
        Assert.Equal(2, (await host.DeadLetters.ListAsync(new Herald.Reliability.DeadLetters.DeadLetterQuery { Endpoint = host.Endpoint })).Count);
        Assert.Single(host.Logs.Entries, e => e.EventId == 1333 && e.Message.Contains("o-11", StringComparison.Ordinal));
        var given = Assert.Single(host.Logs.Entries, e => e.EventId == 1335);
        Assert.Contains("o-11", given.Message, StringComparison.Ordinal);
        Assert.Contains(timeout.Id.ToString(), given.Message, StringComparison.Ordinal);
        Assert.Equal(timeout.Id, Assert.Single((await host.Get<ISagaStore>().LoadAsync("st-orders", "o-11"))!.Timeouts).Id);
    }

    private static int TimeoutsSent(ReliabilityHost host) => host.Transport.Sent.Count(s => s.Envelope.MessageType == "st-payment-timed-out");

    [Fact]
    public async Task ARescheduledTimeout_IgnoresItsFirstDelivery_AndFiresAtItsNewTime()
    {
        await using var host = await StartAsync();
        await host.Get<IMessageBus>().SendAsync(new OrderPlaced("o-4"));
        var waiting = await AwaitingPaymentAsync(host, "o-4");

        var moved = await host.Get<SagaTimeouts>().RescheduleAsync("st-orders", "o-4", "payment", TimeSpan.FromMinutes(30));
        Assert.NotNull(moved);
        Assert.NotEqual(waiting.Timeouts[0].Id, moved.Id);
        Assert.Equal(host.Clock.GetUtcNow() + TimeSpan.FromMinutes(30), moved.DueAt);

        host.Clock.Advance(PaymentWindow + TimeSpan.FromMinutes(1));
        await IgnoredAsync(host, "o-4");
        Assert.Equal("AwaitingPayment", (await host.Get<ISagaStore>().LoadAsync("st-orders", "o-4"))!.State);

        host.Clock.Advance(TimeSpan.FromMinutes(20));
        var expired = await StateAsync(host, "o-4", "Expired");
        Assert.Equal(1, SagaData.Deserialize<OrderState>(expired.Data).TimeoutsSeen);
        Assert.Null(await host.Get<SagaTimeouts>().RescheduleAsync("st-orders", "o-4", "payment", TimeSpan.FromMinutes(1)));
    }

    /// <summary>
    /// Audit (stop 41): a delay whose due time a DateTimeOffset cannot hold (TimeSpan.MaxValue) threw an overflow from deep
    /// inside, which failed the transition and was retried; a delay past the transport's limit was accepted, and without an
    /// outbox its send was refused only after the transition committed, leaving a timeout that never fires. Both, and a
    /// negative delay, are refused at the call, naming the timeout and the limit; a reschedule alike.
    /// </summary>
    [Fact]
    public async Task ATimeoutWithADelayPastTheTransportsLimit_IsRefusedAtTheCall_NamingTheTimeoutAndTheLimit()
    {
        var limit = TimeSpan.FromDays(30);
        var refusals = new List<Exception?>();
        await using var host = await StartSchedulingAsync(async (_, saga, placed) =>
        {
            refusals.Clear();
            foreach (var delay in new[] { limit + TimeSpan.FromDays(1), TimeSpan.MaxValue, TimeSpan.FromSeconds(-1) })
            {
                refusals.Add(await Record.ExceptionAsync(async () => await saga.ScheduleTimeoutAsync("payment", new PaymentTimedOut(placed.OrderId), delay)));
            }

            await saga.ScheduleTimeoutAsync("payment", new PaymentTimedOut(placed.OrderId), limit);
        });
        host.Transport.Capabilities = host.Transport.Capabilities with { MaxDelay = limit };
        await host.Get<IMessageBus>().SendAsync(new OrderPlaced("o-far"));
        await StateAsync(host, "o-far", "AwaitingPayment");
        Assert.Equal(3, refusals.Count);
        foreach (var refusal in refusals)
        {
            var refused = Assert.IsType<ArgumentOutOfRangeException>(refusal);
            Assert.Equal("delay", refused.ParamName);
            Assert.Contains("timeout 'payment' of saga 'st-orders'", refused.Message, StringComparison.Ordinal);
        }

        Assert.Contains("30.00:00:00", refusals[0]!.Message, StringComparison.Ordinal);
        Assert.Contains("30.00:00:00", refusals[1]!.Message, StringComparison.Ordinal);
        var waiting = await AwaitingPaymentAsync(host, "o-far");
        Assert.Equal(host.Clock.GetUtcNow() + limit, Assert.Single(waiting.Timeouts).DueAt);

        var timeouts = host.Get<SagaTimeouts>();
        var rescheduled = await Assert.ThrowsAsync<ArgumentOutOfRangeException>(async () => await timeouts.RescheduleAsync("st-orders", "o-far", "payment", TimeSpan.MaxValue));
        Assert.Contains("timeout 'payment' of saga 'st-orders'", rescheduled.Message, StringComparison.Ordinal);
        Assert.Contains("30.00:00:00", rescheduled.Message, StringComparison.Ordinal);

        // A transport without a limit of its own: the latest due time a DateTimeOffset holds is the limit.
        host.Transport.Capabilities = host.Transport.Capabilities with { MaxDelay = TimeSpan.MaxValue };
        rescheduled = await Assert.ThrowsAsync<ArgumentOutOfRangeException>(async () => await timeouts.RescheduleAsync("st-orders", "o-far", "payment", TimeSpan.MaxValue));
        Assert.Contains("timeout 'payment' of saga 'st-orders'", rescheduled.Message, StringComparison.Ordinal);
        Assert.Equal(waiting.Timeouts[0].Id, Assert.Single(await timeouts.ListAsync("st-orders", "o-far")).Id);
    }
}
