using Herald.Persistence;
using System.Collections.Concurrent;
using System.Text.Json;
using Herald.Handling;
using Herald.Messages;
using Herald.Reliability;
using Herald.Reliability.DeadLetters;
using Herald.Reliability.Inbox;
using Herald.Reliability.Outbox;
using Herald.Conformance;
using Herald.Conformance.Reliability;
using Herald.Tests.Persistence;
using Herald.Transport;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;

namespace Herald.Tests.Reliability;

public sealed class OutboxTests
{
    // The room was checked when the row was added, but the outbox could fill before the commit: the row was then appended by
    // a commit callback, which threw after the unit of work's other writes had applied and without its rollback callbacks,
    // so the inbox mark stayed and the message's retry was taken for a duplicate (the outbox row lost).
    [Fact]
    public async Task AUnitOfWork_WhoseInMemoryOutboxFilledSinceItsRowWasAdded_FailsAtTheCommit_BeforeAnythingIsApplied()
    {
        var outbox = new InMemoryOutboxStore(capacity: 1);
        var inbox = new InMemoryInbox(TimeProvider.System);
        var deadLetters = new InMemoryDeadLetterStore();
        var messageId = Guid.CreateVersion7();
        var committed = false;
        await using var first = new InMemoryUnitOfWork();
        await using var second = new InMemoryUnitOfWork();
        await outbox.AddAsync([OutboxRow()], first);
        await outbox.AddAsync([OutboxRow()], second);
        Assert.True(await inbox.TryMarkHandledAsync("orders", messageId, TimeSpan.FromMinutes(5), second));
        var deadLetter = new DeadLetter
        {
            Id = Guid.CreateVersion7(),
            Envelope = TestEnvelopes.Create(),
            Endpoint = "orders",
            Cause = DeadLetterCause.RetriesExhausted,
            ErrorType = "none",
            ErrorMessage = "none",
            Fingerprint = "none",
            FirstFailureTime = DateTimeOffset.UtcNow,
            LastFailureTime = DateTimeOffset.UtcNow,
        };
        await deadLetters.AddAsync(deadLetter, second);
        second.OnCommitted(_ =>
        {
            committed = true;
            return ValueTask.CompletedTask;
        });
        await first.CommitAsync();

        var full = await Assert.ThrowsAsync<InvalidOperationException>(() => second.CommitAsync().AsTask());

        Assert.Contains("outbox is full", full.Message, StringComparison.Ordinal);
        Assert.False(committed);
        Assert.Null(await deadLetters.GetAsync(deadLetter.Id));
        Assert.False(await inbox.IsHandledAsync("orders", messageId), "the mark is rolled back, so the retry runs");
        Assert.Equal(1, await outbox.CountPendingAsync());
    }

    private static OutboxMessage OutboxRow() => new()
    {
        Id = Guid.CreateVersion7(),
        DestinationKind = OutboxDestinationKind.Queue,
        Destination = "orders",
        Envelope = TestEnvelopes.Create(),
        CreatedAt = DateTimeOffset.UtcNow,
    };

    [Fact]
    public async Task HandlerFailingKTimes_SendsItsMessageOnce_OnlyFromTheAttemptThatCommitted()
    {
        var downstream = "downstream-" + Guid.NewGuid().ToString("N")[..8];
        await using var host = await ReliabilityHost.StartAsync(
            h => h.AddHandler<ForwardingHandler>(ServiceLifetime.Singleton)
                .AddMessageType<Forwarded>()
                .Route<Forwarded>(downstream)
                .UseOutbox()
                .ConfigureRetries(r => r.Immediate(2).Delayed(2, TimeSpan.FromSeconds(1), TimeSpan.FromSeconds(4))));

        // Attempts 1-3 fail in the first delivery, attempt 4 in the first redelivery; attempt 5 commits.
        await host.Get<IMessageBus>().SendAsync(new Forward(Number: 7, FailTimes: 4));

        await host.RunUntilAsync(() => SentTo(host, downstream).Count == 1, "the forwarded message leaves", TimeSpan.FromSeconds(1));
        for (var i = 0; i < 20; i++)
        {
            host.Clock.Advance(TimeSpan.FromSeconds(1));
        }

        var sent = Assert.Single(SentTo(host, downstream));
        Assert.Equal(7, JsonSerializer.Deserialize<Forwarded>(sent.Body.Span, JsonSerializerOptions.Web)!.Number);
        Assert.Equal(0, await host.Get<IOutboxStore>().CountPendingAsync());
        Assert.Equal(2, host.Transport.NackDelays.Count);
    }

    [Fact]
    public async Task Outbox_SendsOnlyAfterTheUnitOfWorkCommits()
    {
        var downstream = "downstream-" + Guid.NewGuid().ToString("N")[..8];
        await using var host = await ReliabilityHost.StartAsync(h => h.AddMessageType<Forwarded>().Route<Forwarded>(downstream).UseOutbox());
        await using var scope = host.Host.Services.CreateAsyncScope();
        var outbox = scope.ServiceProvider.GetRequiredService<IOutbox>();
        var unitOfWork = scope.ServiceProvider.GetRequiredService<IUnitOfWork>();

        await outbox.SendAsync(new Forwarded(1));
        for (var i = 0; i < 5; i++)
        {
            host.Clock.Advance(TimeSpan.FromSeconds(1));
        }

        Assert.Empty(SentTo(host, downstream));
        await unitOfWork.CommitAsync();

        // The commit wakes the relay: no clock movement is needed.
        await Eventually.UntilAsync(() => SentTo(host, downstream).Count == 1, "the committed message leaves");
    }

    // A queue known only at run time (a reply address) had no way in: a send went to its type's route or this endpoint.
    [Fact]
    public async Task ASendNamingADestination_GoesThere_ThroughTheBusAndThroughTheOutbox_InPlaceOfTheTypesRoute()
    {
        var routed = "routed-" + Guid.NewGuid().ToString("N")[..8];
        var direct = "direct-" + Guid.NewGuid().ToString("N")[..8];
        var viaOutbox = "outboxed-" + Guid.NewGuid().ToString("N")[..8];
        await using (var plain = await ReliabilityHost.StartAsync(h => h.AddMessageType<Forwarded>().Route<Forwarded>(routed)))
        {
            await plain.Get<IMessageBus>().SendAsync(new Forwarded(1), new DeliveryOptions { Destination = direct });

            Assert.Single(SentTo(plain, direct));
            Assert.Empty(SentTo(plain, routed));
        }

        await using var host = await ReliabilityHost.StartAsync(h => h.AddMessageType<Forwarded>().Route<Forwarded>(routed).UseOutbox());
        await host.Get<UnitOfWorkRunner>().RunAsync(
            (services, token) => services.GetRequiredService<IMessageBus>().SendAsync(new Forwarded(2), new DeliveryOptions { Destination = viaOutbox }, token));

        await Eventually.UntilAsync(() => SentTo(host, viaOutbox).Count == 1, "the outboxed send reaches the queue it named");
        Assert.Empty(SentTo(host, routed));
    }

    [Fact]
    public async Task APublishNamingADestination_OrASendNamingABlankOne_IsRefused_AndNothingLeaves()
    {
        await using var host = await ReliabilityHost.StartAsync(h => h.AddMessageType<Forwarded>().UseOutbox());
        var bus = host.Get<IMessageBus>();

        var published = await Assert.ThrowsAsync<ArgumentException>(async () => await bus.PublishAsync(new Forwarded(1), new DeliveryOptions { Destination = "somewhere" }));
        Assert.Contains("a publish goes to its type's topic", published.Message, StringComparison.Ordinal);
        var blank = await Assert.ThrowsAsync<ArgumentException>(async () => await bus.SendAsync(new Forwarded(1), new DeliveryOptions { Destination = " " }));
        Assert.Contains("blank DeliveryOptions.Destination", blank.Message, StringComparison.Ordinal);

        await using var scope = host.Host.Services.CreateAsyncScope();
        var outbox = scope.ServiceProvider.GetRequiredService<IOutbox>();
        await Assert.ThrowsAsync<ArgumentException>(async () => await outbox.PublishAsync(new Forwarded(2), new DeliveryOptions { Destination = "somewhere" }));
        await Assert.ThrowsAsync<ArgumentException>(async () => await outbox.SendAsync(new Forwarded(2), new DeliveryOptions { Destination = "" }));
        await scope.ServiceProvider.GetRequiredService<IUnitOfWork>().CommitAsync();
        Assert.Equal(0, await host.Get<IOutboxStore>().CountPendingAsync());
        Assert.Empty(host.Transport.Sent);
    }

    // The outbox refuses a unit of work that has completed; the bus, asked while the scope's unit of work commits (a commit
    // callback) and before the scope ends, must not hand it the message and fail the commit: it sends at once, as after the end.
    [Fact]
    public async Task ABusSend_FromACommitCallbackOfTheUnitOfWork_LeavesAtOnce_InsteadOfFailingTheCommit()
    {
        var downstream = "downstream-" + Guid.NewGuid().ToString("N")[..8];
        await using var host = await ReliabilityHost.StartAsync(h => h.AddMessageType<Forwarded>().Route<Forwarded>(downstream).UseOutbox());

        await host.Get<UnitOfWorkRunner>().RunAsync((services, _) =>
        {
            var bus = services.GetRequiredService<IMessageBus>();
            services.GetRequiredService<IUnitOfWork>().OnCommitted(token => bus.SendAsync(new Forwarded(3), cancellationToken: token));
            return ValueTask.CompletedTask;
        });

        Assert.Single(SentTo(host, downstream));
        Assert.Equal(0, await host.Get<IOutboxStore>().CountPendingAsync());
    }

    [Fact]
    public async Task Outbox_InAUnitOfWorkThatRollsBack_SendsNothing()
    {
        var downstream = "downstream-" + Guid.NewGuid().ToString("N")[..8];
        await using var host = await ReliabilityHost.StartAsync(h => h.AddMessageType<Forwarded>().Route<Forwarded>(downstream).UseOutbox());
        await using (var scope = host.Host.Services.CreateAsyncScope())
        {
            await scope.ServiceProvider.GetRequiredService<IOutbox>().SendAsync(new Forwarded(1));
            await scope.ServiceProvider.GetRequiredService<IUnitOfWork>().RollbackAsync();
        }

        await using (var scope = host.Host.Services.CreateAsyncScope())
        {
            await scope.ServiceProvider.GetRequiredService<IOutbox>().SendAsync(new Forwarded(2));
            await scope.ServiceProvider.GetRequiredService<IUnitOfWork>().CommitAsync();
        }

        await Eventually.UntilAsync(() => SentTo(host, downstream).Count == 1, "the committed message leaves");
        Assert.Equal(2, JsonSerializer.Deserialize<Forwarded>(SentTo(host, downstream)[0].Body.Span, JsonSerializerOptions.Web)!.Number);
        Assert.Equal(0, await host.Get<IOutboxStore>().CountPendingAsync());
    }

    [Fact]
    public async Task Relay_WhileTheTransportIsDown_BacksOffGrowingly_ThenSendsInOrderPerPartitionKey()
    {
        var downstream = "downstream-" + Guid.NewGuid().ToString("N")[..8];
        await using var host = await ReliabilityHost.StartAsync(h => h.AddMessageType<Forwarded>().Route<Forwarded>(downstream)
            .UseOutbox(o =>
            {
                o.MinBackoff = TimeSpan.FromMilliseconds(100);
                o.MaxBackoff = TimeSpan.FromSeconds(2);
            }));
        var failuresLeft = 6;
        host.Transport.FailSend = (destination, _) =>
            destination == downstream && Interlocked.Decrement(ref failuresLeft) >= 0 ? new InvalidOperationException("broker unreachable") : null;
        var key = new DeliveryOptions { PartitionKey = "order-42" };

        await using (var scope = host.Host.Services.CreateAsyncScope())
        {
            var outbox = scope.ServiceProvider.GetRequiredService<IOutbox>();
            for (var i = 1; i <= 3; i++)
            {
                await outbox.SendAsync(new Forwarded(i), key);
            }

            await scope.ServiceProvider.GetRequiredService<IUnitOfWork>().CommitAsync();
        }

        await host.RunUntilAsync(() => SentTo(host, downstream).Count == 3, "every message leaves once the broker is back", TimeSpan.FromMilliseconds(100));
        var numbers = SentTo(host, downstream).Select(e => JsonSerializer.Deserialize<Forwarded>(e.Body.Span, JsonSerializerOptions.Web)!.Number);
        Assert.Equal([1, 2, 3], numbers);
        var backoffs = host.Logs.Entries.Where(e => e.EventId == 2030).ToList();
        Assert.Equal(6, backoffs.Count);
        Assert.Equal(0, await host.Get<IOutboxStore>().CountPendingAsync());
    }

    [Fact]
    public async Task PendingGauge_WhileTheTransportIsDown_CountsTheBacklogThatBuildsUp()
    {
        // The relay counted its backlog only when it ran out of due messages: through an outage every round failed and
        // backed off, so herald.outbox.pending kept the count from before it (0) while the backlog grew.
        var downstream = "downstream-" + Guid.NewGuid().ToString("N")[..8];
        await using var host = await ReliabilityHost.StartAsync(h => h.AddMessageType<Forwarded>().Route<Forwarded>(downstream).UseOutbox());
        var relay = host.Host.Services.GetServices<IHostedService>().OfType<OutboxRelay>().Single();
        var down = 1;
        host.Transport.FailSend = (destination, _) => destination == downstream && Volatile.Read(ref down) == 1 ? new InvalidOperationException("broker unreachable") : null;

        await using (var scope = host.Host.Services.CreateAsyncScope())
        {
            var outbox = scope.ServiceProvider.GetRequiredService<IOutbox>();
            for (var i = 1; i <= 3; i++)
            {
                await outbox.SendAsync(new Forwarded(i));
            }

            await scope.ServiceProvider.GetRequiredService<IUnitOfWork>().CommitAsync();
        }

        await host.RunUntilAsync(() => relay.Pending == 3, "the gauge counts the three messages waiting out the outage", TimeSpan.FromMilliseconds(100));
        Volatile.Write(ref down, 0);
        await host.RunUntilAsync(() => SentTo(host, downstream).Count == 3 && relay.Pending == 0, "the backlog leaves and the gauge follows", TimeSpan.FromMilliseconds(100));
    }

    [Fact]
    public async Task PendingGauge_WhileABacklogGoesOutInFullBatches_CountsItOnTheWay()
    {
        // Counted only once the relay ran out of due messages, the gauge kept the count from before a burst (0) until
        // the whole burst was sent.
        var downstream = "downstream-" + Guid.NewGuid().ToString("N")[..8];
        await using var host = await ReliabilityHost.StartAsync(h => h.AddMessageType<Forwarded>().Route<Forwarded>(downstream)
            .UseOutbox(o => o.BatchSize = 2));
        var relay = host.Host.Services.GetServices<IHostedService>().OfType<OutboxRelay>().Single();
        // The second and third batches wait in their sends, holding the relay in the middle of the burst.
        using var thirdSend = new ManualResetEventSlim();
        using var fifthSend = new ManualResetEventSlim();
        var waiting = 0;
        host.Transport.FailSend = (destination, envelope) =>
        {
            var number = destination == downstream ? JsonSerializer.Deserialize<Forwarded>(envelope.Body.Span, JsonSerializerOptions.Web)!.Number : 0;
            if (number is 3 or 5)
            {
                Volatile.Write(ref waiting, number);
                (number == 3 ? thirdSend : fifthSend).Wait(TimeSpan.FromSeconds(30));
            }

            return null;
        };

        await using (var scope = host.Host.Services.CreateAsyncScope())
        {
            var outbox = scope.ServiceProvider.GetRequiredService<IOutbox>();
            for (var i = 1; i <= 6; i++)
            {
                await outbox.SendAsync(new Forwarded(i));
            }

            await scope.ServiceProvider.GetRequiredService<IUnitOfWork>().CommitAsync();
        }

        await Eventually.UntilAsync(() => Volatile.Read(ref waiting) == 3, "the second batch is sending");
        host.Clock.Advance(TimeSpan.FromSeconds(1));
        thirdSend.Set();
        await Eventually.UntilAsync(() => Volatile.Read(ref waiting) == 5, "the third batch is sending");
        Assert.Equal(2, relay.Pending);
        fifthSend.Set();
        await host.RunUntilAsync(() => SentTo(host, downstream).Count == 6 && relay.Pending == 0, "the burst leaves and the gauge follows", TimeSpan.FromMilliseconds(100));
    }

    [Fact]
    public async Task Relay_DeletesSentMessages_OnceTheirRetentionPassed()
    {
        var downstream = "downstream-" + Guid.NewGuid().ToString("N")[..8];
        var store = new CapturingOutboxStore();
        await using var host = await ReliabilityHost.StartAsync(
            h => h.AddMessageType<Forwarded>().Route<Forwarded>(downstream).UseOutbox(o =>
            {
                o.Retention = TimeSpan.FromMinutes(1);
                o.CleanupInterval = TimeSpan.FromMinutes(1);
            }),
            s => s.AddSingleton<IOutboxStore>(store));
        await using (var scope = host.Host.Services.CreateAsyncScope())
        {
            await scope.ServiceProvider.GetRequiredService<IOutbox>().SendAsync(new Forwarded(1));
            await scope.ServiceProvider.GetRequiredService<IUnitOfWork>().CommitAsync();
        }

        await Eventually.UntilAsync(() => SentTo(host, downstream).Count == 1, "the message leaves");
        var id = Assert.Single(store.Added);
        Assert.NotNull((await store.GetAsync(id))?.SentAt);

        await Eventually.UntilAsync(
            async () =>
            {
                host.Clock.Advance(TimeSpan.FromSeconds(20));
                return await store.GetAsync(id) is null;
            },
            "the sent row is deleted");
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task Relay_WithNoCleanup_OrSentMessagesKeptForEver_Sends_AndCountsItsBacklog(bool keptForEver)
    {
        // TimeSpan.MaxValue passed validation, then overflowed: as the cleanup interval, at the relay's first step (it failed,
        // let go of its leadership and tried again for ever, sending nothing); as the retention, in every cleanup, which
        // failed each round before the backlog was counted.
        var downstream = "downstream-" + Guid.NewGuid().ToString("N")[..8];
        var store = new CapturingOutboxStore();
        await using var host = await ReliabilityHost.StartAsync(
            h => h.AddMessageType<Forwarded>().Route<Forwarded>(downstream).UseOutbox(o =>
            {
                o.Retention = keptForEver ? TimeSpan.MaxValue : TimeSpan.FromMinutes(1);
                o.CleanupInterval = keptForEver ? TimeSpan.FromMinutes(1) : TimeSpan.MaxValue;
            }),
            s => s.AddSingleton<IOutboxStore>(store));
        await using (var scope = host.Host.Services.CreateAsyncScope())
        {
            await scope.ServiceProvider.GetRequiredService<IOutbox>().SendAsync(new Forwarded(1));
            await scope.ServiceProvider.GetRequiredService<IUnitOfWork>().CommitAsync();
        }

        await host.RunUntilAsync(() => SentTo(host, downstream).Count == 1, "the message leaves", TimeSpan.FromSeconds(1));
        var id = Assert.Single(store.Added);
        await Eventually.UntilAsync(async () => (await store.GetAsync(id))?.SentAt is not null, "its row is marked sent");
        host.Clock.Advance(TimeSpan.FromDays(400));
        var counted = store.Counts;
        await host.RunUntilAsync(() => store.Counts > counted, "a round after the cleanup was due counts the backlog", TimeSpan.FromSeconds(1));

        Assert.NotNull(await store.GetAsync(id));
        Assert.DoesNotContain(host.Logs.Entries, e => e.EventId is 1023 or 2032);
    }

    [Theory]
    [InlineData("PollInterval")]
    [InlineData("MaxBackoff")]
    public void Options_WithAWaitLongerThanATimerHolds_AreRefusedAtStart_NamingTheSetting(string setting)
    {
        // A poll interval past a timer's limit passed validation, then threw at the relay's first wait, out of the background
        // service, stopping the host; a back-off that long threw at the first failure.
        var services = new ServiceCollection();
        services.AddHerald(h => h.UseOutbox(o =>
        {
            if (setting == "PollInterval")
            {
                o.PollInterval = TimeSpan.FromDays(60);
            }
            else
            {
                o.MaxBackoff = TimeSpan.MaxValue;
            }
        }));
        using var provider = services.BuildServiceProvider();

        var error = Assert.Throws<Microsoft.Extensions.Options.OptionsValidationException>(
            () => provider.GetRequiredService<Microsoft.Extensions.Options.IOptions<OutboxOptions>>().Value);

        Assert.Contains(setting, error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Relay_MovesAMessageTheTransportRefuses_ToTheDeadLetters_AndGoesOn()
    {
        var downstream = "downstream-" + Guid.NewGuid().ToString("N")[..8];
        await using var host = await RelayARefusedAndAGoodMessageAsync(downstream);

        var deadLetter = Assert.Single((await host.Get<DeadLetterManager>().ListAsync(new DeadLetterQuery { Endpoint = downstream })).Items);
        Assert.Equal(DeadLetterCause.SendRejected, deadLetter.Cause);
        Assert.Equal(typeof(MessageTooLargeException).FullName, deadLetter.ErrorType);
        // The relay marks a row sent just after the transport took it, so the count may lag the send by a moment.
        await Eventually.UntilAsync(async () => await host.Get<IOutboxStore>().CountPendingAsync() == 0, "both rows are settled");
    }

    // The relay's dead letters were not counted on herald.messages.dead_lettered, and the dead-letter monitor was not told:
    // it knew only the host's own endpoint, so herald.dead_letters never reported the destination's and no alert could fire.
    [Fact]
    public async Task Relay_AMessageTheTransportRefuses_IsCountedDeadLetteredOnce_AndReportedByTheDeadLetterGauge()
    {
        var downstream = "downstream-" + Guid.NewGuid().ToString("N")[..8];
        var counted = new ConcurrentQueue<(long Value, string? Type)>();
        using var listener = Diagnostics.DiagnosticsTests.ListenToDeadLettered(downstream, (value, type) => counted.Enqueue((value, type)));
        await using var host = await RelayARefusedAndAGoodMessageAsync(downstream);

        var monitor = host.Get<DeadLetterMonitor>();
        await Eventually.UntilAsync(
            () => monitor.Counts.TryGetValue(downstream, out var held) && held == 1,
            "herald.dead_letters reports the refused message under its destination");
        Assert.Equal([(1L, "rel-forwarded")], counted);
    }

    /// <summary>
    /// A host whose transport refuses <c>Forwarded(1)</c> for good, with it and <c>Forwarded(2)</c> committed to the outbox
    /// for <paramref name="downstream"/>; returns once the second one was sent.
    /// </summary>
    private static async Task<ReliabilityHost> RelayARefusedAndAGoodMessageAsync(string downstream)
    {
        var host = await ReliabilityHost.StartAsync(h => h.AddMessageType<Forwarded>().Route<Forwarded>(downstream).UseOutbox());
        host.Transport.FailSend = (_, envelope) =>
            JsonSerializer.Deserialize<Forwarded>(envelope.Body.Span, JsonSerializerOptions.Web)!.Number == 1 ? new MessageTooLargeException(envelope.MessageType, 10_000, 1_000) : null;

        await using (var scope = host.Host.Services.CreateAsyncScope())
        {
            var outbox = scope.ServiceProvider.GetRequiredService<IOutbox>();
            await outbox.SendAsync(new Forwarded(1));
            await outbox.SendAsync(new Forwarded(2));
            await scope.ServiceProvider.GetRequiredService<IUnitOfWork>().CommitAsync();
        }

        await Eventually.UntilAsync(() => SentTo(host, downstream).Count == 1, "the second message leaves");
        return host;
    }

    [Fact]
    public async Task Add_WithATraceparentTheCallerSet_KeepsIt_InsteadOfTheCurrentActivitys()
    {
        // The outbox overwrote it with the current activity's, while an AggregateRepository keeps one given in its metadata.
        var downstream = "downstream-" + Guid.NewGuid().ToString("N")[..8];
        var given = $"00-{System.Diagnostics.ActivityTraceId.CreateRandom()}-{System.Diagnostics.ActivitySpanId.CreateRandom()}-01";
        await using var host = await ReliabilityHost.StartAsync(h => h.AddMessageType<Forwarded>().Route<Forwarded>(downstream).UseOutbox());
        await using (var scope = host.Host.Services.CreateAsyncScope())
        {
            using (new System.Diagnostics.Activity("request").SetIdFormat(System.Diagnostics.ActivityIdFormat.W3C).Start())
            {
                await scope.ServiceProvider.GetRequiredService<IOutbox>().SendAsync(
                    new Forwarded(1), new DeliveryOptions { Headers = new Dictionary<string, string> { [HeaderNames.TraceParent] = given } });
            }

            await scope.ServiceProvider.GetRequiredService<IUnitOfWork>().CommitAsync();
        }

        await Eventually.UntilAsync(() => SentTo(host, downstream).Count == 1, "the message leaves");
        Assert.Equal(given, SentTo(host, downstream)[0].GetHeader(HeaderNames.TraceParent));
    }

    [Fact]
    public async Task Add_OfAMessageTheTransportWillRefuse_FailsInTheCaller_AndAddsNothing()
    {
        // Issue 10: a name or delay past the transport's limits used to be found only by the relay, which retried it forever.
        var longName = new string('q', 300);
        await using var host = await ReliabilityHost.StartAsync(h => h.AddMessageType<Forwarded>().Route<Forwarded>(longName).UseOutbox());
        host.Transport.Capabilities = host.Transport.Capabilities with { MaxNameBytes = 255, MaxDelay = TimeSpan.FromDays(1) };
        await using var scope = host.Host.Services.CreateAsyncScope();
        var outbox = scope.ServiceProvider.GetRequiredService<IOutbox>();

        var name = await Assert.ThrowsAsync<MessageRejectedException>(async () => await outbox.SendAsync(new Forwarded(1)));
        Assert.Contains("255 bytes", name.Message, StringComparison.Ordinal);
        var delay = await Assert.ThrowsAsync<MessageRejectedException>(
            async () => await outbox.PublishAsync(new Forwarded(2), new DeliveryOptions { Delay = TimeSpan.FromDays(2) }));
        Assert.Contains("delay", delay.Message, StringComparison.Ordinal);
        await outbox.PublishAsync(new Forwarded(4), new DeliveryOptions { Delay = TimeSpan.FromHours(23) });

        await scope.ServiceProvider.GetRequiredService<IUnitOfWork>().CommitAsync();
        // Only the message within the limits was added: still pending, or already handed over by the relay (which the
        // commit wakes), never both and never the refused ones.
        var pending = await host.Get<IOutboxStore>().CountPendingAsync();
        var handedOver = host.Transport.Sent.Count;
        Assert.True(handedOver <= 1 && pending <= 1 && pending + handedOver >= 1, $"{pending} pending, {handedOver} handed over");
    }

    [Fact]
    public async Task Relay_OnANodeThatDoesNotLeadTheOutbox_SendsNothing_UntilTheLeaderReleasesIt()
    {
        var downstream = "downstream-" + Guid.NewGuid().ToString("N")[..8];
        var election = new ScriptedElection();
        var otherNode = await election.Inner.TryAcquireAsync(OutboxRelay.LeadershipResource);
        Assert.NotNull(otherNode);
        await using var host = await ReliabilityHost.StartAsync(
            h => h.AddMessageType<Forwarded>().Route<Forwarded>(downstream).UseOutbox(o => o.PollInterval = TimeSpan.FromSeconds(1)),
            s => s.AddSingleton<ILeaderElection>(election));
        Assert.Null(await election.NextTryAsync());
        await using (var scope = host.Host.Services.CreateAsyncScope())
        {
            await scope.ServiceProvider.GetRequiredService<IOutbox>().SendAsync(new Forwarded(1));
            await scope.ServiceProvider.GetRequiredService<IUnitOfWork>().CommitAsync();
        }

        // Two more tries after the commit, both refused: a relay that woke on the commit without leading would have sent by now.
        var refused = 0;
        await host.RunUntilAsync(
            () =>
            {
                while (election.Tries.TryRead(out var lease))
                {
                    Assert.Null(lease);
                    refused++;
                }

                return refused >= 2;
            },
            "the relay tries to lead twice more",
            TimeSpan.FromSeconds(1));
        Assert.Empty(SentTo(host, downstream));
        Assert.Equal(1, await host.Get<IOutboxStore>().CountPendingAsync());

        await otherNode.DisposeAsync();

        await host.RunUntilAsync(() => SentTo(host, downstream).Count == 1, "the relay leads and sends", TimeSpan.FromSeconds(1));
    }

    // Issue 9: what a handler sent through its injected IMessageBus left at once, before its unit of work committed, and again
    // on every attempt of a handler that then failed; a MessageContext send went through the outbox.
    [Theory]
    [InlineData(ServiceLifetime.Singleton)]
    [InlineData(ServiceLifetime.Scoped)]
    public async Task InjectedBus_InAHandler_SendsThroughTheOutbox_OnceAfterTheCommit_Issue9(ServiceLifetime lifetime)
    {
        var downstream = "downstream-" + Guid.NewGuid().ToString("N")[..8];
        var gate = new BusGate();
        await using var host = await ReliabilityHost.StartAsync(
            h => h.AddHandler<BusForwardingHandler>(lifetime).AddMessageType<Forwarded>().Route<Forwarded>(downstream).UseOutbox(),
            s => s.AddSingleton(gate));

        await host.Get<IMessageBus>().SendAsync(new BusForward(Number: 3, Fail: false), new DeliveryOptions { CorrelationId = "flow-3" });
        await gate.Entered.Task.WaitAsync(TimeSpan.FromSeconds(30));

        // Sent and published, not committed: the transport has neither, the outbox holds them uncommitted.
        Assert.Empty(SentTo(host, downstream));
        Assert.Empty(SentTo(host, "rel-forwarded"));
        Assert.Equal(0, await host.Get<IOutboxStore>().CountPendingAsync());

        gate.Release.SetResult();
        await Eventually.UntilAsync(() => SentTo(host, downstream).Count == 1 && SentTo(host, "rel-forwarded").Count == 1, "both leave after the commit");
        await Eventually.UntilAsync(async () => await host.Get<IOutboxStore>().CountPendingAsync() == 0, "the relay marks them sent");

        // The commit wakes the relay and only then returns for the ack: the rows may leave before the delivery is settled.
        await Eventually.UntilAsync(() => host.Transport.Settlements.Count == 1, "the delivery is acked after the commit");
        var incoming = Assert.Single(host.Transport.Settlements).Envelope;
        var sent = Assert.Single(SentTo(host, downstream));
        Assert.Equal("flow-3", sent.CorrelationId);
        Assert.Equal(incoming.MessageId.ToString(), sent.CausationId);
        Assert.Single(SentTo(host, "rel-forwarded"));
    }

    [Theory]
    [InlineData(ServiceLifetime.Singleton)]
    [InlineData(ServiceLifetime.Scoped)]
    public async Task InjectedBus_InAHandlerThatFails_SendsNothing_AndTheMessageIsDeadLettered_Issue9(ServiceLifetime lifetime)
    {
        var downstream = "downstream-" + Guid.NewGuid().ToString("N")[..8];
        await using var host = await ReliabilityHost.StartAsync(
            h => h.AddHandler<BusForwardingHandler>(lifetime).AddMessageType<Forwarded>().Route<Forwarded>(downstream).UseOutbox()
                .ConfigureRetries(r => r.Immediate(1).Delayed(1, TimeSpan.FromSeconds(1), TimeSpan.FromSeconds(1))),
            s => s.AddSingleton(new BusGate()));

        await host.Get<IMessageBus>().SendAsync(new BusForward(Number: 4, Fail: true));
        var deadLetter = Assert.Single(await host.WaitForDeadLettersAsync(step: TimeSpan.FromSeconds(1)));
        Assert.Equal(3, deadLetter.AttemptCount);

        // A message committed afterwards leaves, so one committed before would have: none was.
        await using (var scope = host.Host.Services.CreateAsyncScope())
        {
            await scope.ServiceProvider.GetRequiredService<IOutbox>().SendAsync(new Forwarded(99));
            await scope.ServiceProvider.GetRequiredService<IUnitOfWork>().CommitAsync();
        }

        await Eventually.UntilAsync(() => SentTo(host, downstream).Count >= 1, "the marker leaves");
        var only = Assert.Single(SentTo(host, downstream));
        Assert.Equal(99, JsonSerializer.Deserialize<Forwarded>(only.Body.Span, JsonSerializerOptions.Web)!.Number);
        Assert.Empty(SentTo(host, "rel-forwarded"));
        await Eventually.UntilAsync(async () => await host.Get<IOutboxStore>().CountPendingAsync() == 0, "no outbox row is left");
    }

    [Fact]
    public async Task InjectedBus_InACommandHandlerThatFails_SendsNothing_AndOneThatReturns_SendsAfterTheCommit_Issue9()
    {
        var downstream = "downstream-" + Guid.NewGuid().ToString("N")[..8];
        await using var host = await ReliabilityHost.StartAsync(
            h => h.AddHandler<BusCommandHandler>().AddMessageType<Forwarded>().Route<Forwarded>(downstream).UseOutbox());
        var commands = host.Get<Herald.Cqrs.ICommandBus>();

        await Assert.ThrowsAsync<InvalidOperationException>(() => commands.SendAsync(new BusCommand(Number: 5, Fail: true)).AsTask());
        await commands.SendAsync(new BusCommand(Number: 6, Fail: false));

        await Eventually.UntilAsync(() => SentTo(host, downstream).Count >= 1, "the committed command's message leaves");
        var only = Assert.Single(SentTo(host, downstream));
        Assert.Equal(6, JsonSerializer.Deserialize<Forwarded>(only.Body.Span, JsonSerializerOptions.Web)!.Number);
        await Eventually.UntilAsync(async () => await host.Get<IOutboxStore>().CountPendingAsync() == 0, "no outbox row is left");
    }

    // A send from work the handler left running after its attempt ended cannot join its unit of work; written into a scope
    // made after the attempt, nothing would ever commit it. It leaves at once instead.
    [Fact]
    public async Task InjectedBus_UsedAfterTheHandlersAttemptEnded_SendsAtOnce_Issue9()
    {
        var downstream = "downstream-" + Guid.NewGuid().ToString("N")[..8];
        var late = new LateSend();
        await using var host = await ReliabilityHost.StartAsync(
            h => h.AddHandler<LateSendingHandler>(ServiceLifetime.Singleton).AddMessageType<Forwarded>().Route<Forwarded>(downstream).UseOutbox(),
            s => s.AddSingleton(late));

        await host.Get<IMessageBus>().SendAsync(new LateForward(8));
        await Eventually.UntilAsync(() => host.Transport.Settlements.Count == 1, "the attempt commits and is acked");
        late.Go.SetResult();
        await late.Sent.Task.WaitAsync(TimeSpan.FromSeconds(30));

        var sent = Assert.Single(SentTo(host, downstream));
        Assert.Equal(8, JsonSerializer.Deserialize<Forwarded>(sent.Body.Span, JsonSerializerOptions.Web)!.Number);
        Assert.Equal(host.Transport.Settlements[0].Envelope.MessageId.ToString(), sent.CausationId);
    }

    // Round-9 item: a command sent from work the handler left running ran with no metadata, while a message the same work
    // sent through IMessageBus kept the handled message's correlation, cause and user (none here: a transport's is not trusted).
    [Fact]
    public async Task ACommandSentAfterTheHandlersAttemptEnded_CarriesTheHandledMessagesMetadata_AsTheBusDoes()
    {
        var downstream = "downstream-" + Guid.NewGuid().ToString("N")[..8];
        var late = new LateSend();
        await using var host = await ReliabilityHost.StartAsync(
            h => h.AddHandler<LateCommandingHandler>(ServiceLifetime.Singleton).AddHandler<BusCommandHandler>().AddMessageType<Forwarded>().Route<Forwarded>(downstream).UseOutbox(),
            s => s.AddSingleton(late));

        await host.Get<IMessageBus>().SendAsync(new LateCommand(9), new DeliveryOptions { CorrelationId = "corr-late" });
        await Eventually.UntilAsync(() => host.Transport.Settlements.Count == 1, "the attempt commits and is acked");
        late.Go.SetResult();
        await late.Sent.Task.WaitAsync(TimeSpan.FromSeconds(30));

        await Eventually.UntilAsync(() => SentTo(host, downstream).Count == 1, "the command's message leaves");
        var sent = Assert.Single(SentTo(host, downstream));
        Assert.Equal(host.Transport.Settlements[0].Envelope.MessageId.ToString(), sent.CausationId);
        Assert.Equal("corr-late", sent.CorrelationId);
    }

    [Fact]
    public async Task Bus_OutsideAnyHandler_SendsAtOnce_EvenWithTheOutbox()
    {
        var downstream = "downstream-" + Guid.NewGuid().ToString("N")[..8];
        await using var host = await ReliabilityHost.StartAsync(h => h.AddMessageType<Forwarded>().Route<Forwarded>(downstream).UseOutbox());

        await host.Get<IMessageBus>().SendAsync(new Forwarded(1));

        Assert.Single(SentTo(host, downstream));
        Assert.Equal(0, await host.Get<IOutboxStore>().CountPendingAsync());
    }

    [Fact]
    public async Task Outbox_ADelayedSend_IsDueFromWhenItWasEnqueued_NotFromWhenTheRelaySendsIt()
    {
        var downstream = "downstream-" + Guid.NewGuid().ToString("N")[..8];
        await using var host = await ReliabilityHost.StartAsync(h => h.AddMessageType<Forwarded>().Route<Forwarded>(downstream).UseOutbox());
        await using var scope = host.Host.Services.CreateAsyncScope();
        await scope.ServiceProvider.GetRequiredService<IOutbox>().SendAsync(new Forwarded(1), new DeliveryOptions { Delay = TimeSpan.FromSeconds(30) });

        // The unit of work commits 20 s later (a slow handler): the message stays due at 30 s from its enqueueing.
        host.Clock.Advance(TimeSpan.FromSeconds(20));
        await scope.ServiceProvider.GetRequiredService<IUnitOfWork>().CommitAsync();

        await Eventually.UntilAsync(() => SentTo(host, downstream).Count == 1, "the committed message leaves");
        var sent = SentTo(host, downstream)[0];
        Assert.Equal(TimeSpan.FromSeconds(10), host.Transport.Delays[sent.MessageId]);
    }

    private static List<Envelope> SentTo(ReliabilityHost host, string destination) =>
        [.. host.Transport.Sent.Where(s => s.Destination == destination).Select(s => s.Envelope)];

    [MessageType("rel-forward")]
    public sealed record Forward(int Number, int FailTimes);

    [MessageType("rel-forwarded")]
    public sealed record Forwarded(int Number);

    [MessageType("rel-bus-forward")]
    public sealed record BusForward(int Number, bool Fail);

    public sealed record BusCommand(int Number, bool Fail) : Herald.Cqrs.ICommand;

    public sealed class BusGate
    {
        public TaskCompletionSource Entered { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public TaskCompletionSource Release { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
    }

    /// <summary>Sends and publishes through its injected bus, never its context; then fails, or waits for the test.</summary>
    public sealed class BusForwardingHandler(IMessageBus bus, BusGate gate) : IMessageHandler<BusForward>
    {
        public async ValueTask HandleAsync(BusForward message, MessageContext context, CancellationToken cancellationToken)
        {
            await bus.SendAsync(new Forwarded(message.Number), cancellationToken: cancellationToken);
            await bus.PublishAsync(new Forwarded(message.Number), cancellationToken: cancellationToken);
            if (message.Fail)
            {
                throw new InvalidOperationException($"failing after the bus sent, attempt {context.Attempt}");
            }

            gate.Entered.TrySetResult();
            await gate.Release.Task.WaitAsync(cancellationToken);
        }
    }

    [MessageType("rel-late-forward")]
    public sealed record LateForward(int Number);

    public sealed class LateSend
    {
        public TaskCompletionSource Go { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public TaskCompletionSource Sent { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        /// <summary>Runs <paramref name="send"/> once the test says go, after the attempt that started it has ended.</summary>
        public async Task SendLaterAsync(Func<ValueTask> send)
        {
            try
            {
                await Go.Task;
                await send();
                Sent.SetResult();
            }
            catch (Exception ex)
            {
                Sent.SetException(ex);
            }
        }
    }

    /// <summary>Leaves a send running that waits for the test, after the attempt has ended.</summary>
    public sealed class LateSendingHandler(IMessageBus bus, LateSend late) : IMessageHandler<LateForward>
    {
        public ValueTask HandleAsync(LateForward message, MessageContext context, CancellationToken cancellationToken)
        {
            _ = late.SendLaterAsync(() => bus.SendAsync(new Forwarded(message.Number)));
            return ValueTask.CompletedTask;
        }
    }

    [MessageType("rel-late-command")]
    public sealed record LateCommand(int Number);

    /// <summary>Leaves a command running that waits for the test, after the attempt has ended.</summary>
    public sealed class LateCommandingHandler(Herald.Cqrs.ICommandBus commands, LateSend late) : IMessageHandler<LateCommand>
    {
        public ValueTask HandleAsync(LateCommand message, MessageContext context, CancellationToken cancellationToken)
        {
            _ = late.SendLaterAsync(() => commands.SendAsync(new BusCommand(message.Number, Fail: false)));
            return ValueTask.CompletedTask;
        }
    }

    public sealed class BusCommandHandler(IMessageBus bus) : Herald.Cqrs.ICommandHandler<BusCommand>
    {
        public async ValueTask HandleAsync(BusCommand command, CancellationToken cancellationToken)
        {
            await bus.SendAsync(new Forwarded(command.Number), cancellationToken: cancellationToken);
            if (command.Fail)
            {
                throw new InvalidOperationException("the command fails after its bus sent");
            }
        }
    }

    public sealed class ForwardingHandler : IMessageHandler<Forward>
    {
        public async ValueTask HandleAsync(Forward message, MessageContext context, CancellationToken cancellationToken)
        {
            await context.SendAsync(new Forwarded(message.Number), cancellationToken: cancellationToken);
            if (context.Attempt <= message.FailTimes)
            {
                throw new InvalidOperationException($"failing after sending, attempt {context.Attempt}");
            }
        }
    }

    private sealed class CapturingOutboxStore : IOutboxStore
    {
        private readonly InMemoryOutboxStore _inner = new();
        private readonly ConcurrentQueue<Guid> _added = new();
        private int _counts;

        public IReadOnlyList<Guid> Added => [.. _added];

        public async ValueTask AddAsync(IReadOnlyList<OutboxMessage> messages, IUnitOfWork? unitOfWork = null, CancellationToken cancellationToken = default)
        {
            await _inner.AddAsync(messages, unitOfWork, cancellationToken);
            foreach (var message in messages)
            {
                _added.Enqueue(message.Id);
            }
        }

        public ValueTask<IReadOnlyList<OutboxMessage>> FetchPendingAsync(int maxCount, DateTimeOffset? dueBy = null, CancellationToken cancellationToken = default) =>
            _inner.FetchPendingAsync(maxCount, dueBy, cancellationToken);

        public ValueTask RecordFailedAttemptAsync(Guid id, DateTimeOffset nextAttemptAt, CancellationToken cancellationToken = default) =>
            _inner.RecordFailedAttemptAsync(id, nextAttemptAt, cancellationToken);

        public ValueTask MarkSentAsync(IReadOnlyCollection<Guid> ids, DateTimeOffset sentAt, CancellationToken cancellationToken = default) => _inner.MarkSentAsync(ids, sentAt, cancellationToken);

        public ValueTask<int> DeleteSentAsync(DateTimeOffset sentBefore, int maxCount, CancellationToken cancellationToken = default) => _inner.DeleteSentAsync(sentBefore, maxCount, cancellationToken);

        /// <summary>How many times the backlog was counted (the relay counts it after each round's cleanup).</summary>
        public int Counts => Volatile.Read(ref _counts);

        public ValueTask<long> CountPendingAsync(CancellationToken cancellationToken = default)
        {
            Interlocked.Increment(ref _counts);
            return _inner.CountPendingAsync(cancellationToken);
        }

        public ValueTask<OutboxMessage?> GetAsync(Guid id, CancellationToken cancellationToken = default) => _inner.GetAsync(id, cancellationToken);
    }
}
