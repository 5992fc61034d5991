using System.Globalization;
using Herald.Messages;
using Herald.Reliability.DeadLetters;
using Herald.Reliability.Outbox;
using Herald.Transport;
using Herald.Transport.InMemory;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Time.Testing;
using Xunit;

namespace Herald.Conformance.Reliability;

/// <summary>
/// Failed sends (issue 10): the per-row attempt count and back-off of the store, and the relay over this store moving past
/// rows the transport refuses, so they never block the rows behind them.
/// </summary>
public abstract partial class OutboxStoreConformance
{
    [Fact]
    public async Task RecordFailedAttempt_CountsIt_AndHoldsTheMessageBackUntilItIsDue()
    {
        var store = await CreateStoreAsync();
        var message = NewMessage(partitionKey: null);
        await store.AddAsync([message]);

        await store.RecordFailedAttemptAsync(message.Id, BaseTime.AddSeconds(10));
        await store.RecordFailedAttemptAsync(message.Id, BaseTime.AddSeconds(20));
        await store.RecordFailedAttemptAsync(Guid.CreateVersion7(), BaseTime);

        var stored = (await store.GetAsync(message.Id))!;
        Assert.Equal(2, stored.Attempts);
        Assert.Equal(BaseTime.AddSeconds(20), stored.NextAttemptAt);
        Assert.DoesNotContain(message.Id, (await store.FetchPendingAsync(FetchWindow, BaseTime.AddSeconds(19))).Select(m => m.Id));
        Assert.Contains(message.Id, (await store.FetchPendingAsync(FetchWindow, BaseTime.AddSeconds(20))).Select(m => m.Id));
        Assert.Contains(message.Id, (await store.FetchPendingAsync(FetchWindow)).Select(m => m.Id));
    }

    [Fact]
    public async Task FetchDue_SkipsAWaitingMessage_AndTheLaterOnesOfItsKey_ButNoOthers()
    {
        var store = await CreateStoreAsync();
        var key = "waiting-" + Guid.NewGuid().ToString("N");
        var waiting = NewMessage(key);
        var sameKey = NewMessage(key);
        var otherKey = NewMessage("other-" + Guid.NewGuid().ToString("N"));
        var noKey = NewMessage(partitionKey: null);
        await store.AddAsync([waiting, sameKey, otherKey, noKey]);
        await store.RecordFailedAttemptAsync(waiting.Id, BaseTime.AddHours(1));

        var due = (await store.FetchPendingAsync(FetchWindow, BaseTime)).Select(m => m.Id).ToList();

        Assert.DoesNotContain(waiting.Id, due);
        Assert.DoesNotContain(sameKey.Id, due);
        Assert.Equal([otherKey.Id, noKey.Id], due.Where(id => id == otherKey.Id || id == noKey.Id));
        var later = (await store.FetchPendingAsync(FetchWindow, BaseTime.AddHours(1))).Select(m => m.Id).ToList();
        Assert.Equal([waiting.Id, sameKey.Id], later.Where(id => id == waiting.Id || id == sameKey.Id));
    }

    [Fact]
    public async Task Relay_ThreeRowsTheTransportRefusesAtTheHead_AreDeadLetteredAsRejected_AndTheRowsBehindThemAreSent()
    {
        await using var relay = await RelayHost.StartAsync(await CreateStoreAsync());
        var refused = relay.NewRows(3);
        var good = relay.NewRows(3);
        relay.Fail = envelope => refused.Any(r => r.Envelope.MessageId == envelope.MessageId)
            ? new MessageRejectedException("The broker refuses this destination for good.")
            : null;

        await relay.Store.AddAsync([.. refused, .. good]);

        await relay.RunUntilAsync(() => relay.SentIds.Count == 3, "the rows behind the refused ones are sent");
        Assert.Equal(good.Select(r => r.Envelope.MessageId), relay.SentIds);
        var deadLetters = await relay.DeadLettersAsync();
        Assert.Equal(refused.Select(r => r.Envelope.MessageId).Order(), deadLetters.Select(d => d.Envelope.MessageId).Order());
        Assert.All(deadLetters, d => Assert.Equal(DeadLetterCause.SendRejected, d.Cause));
        Assert.All(deadLetters, d => Assert.Equal(typeof(MessageRejectedException).FullName, d.ErrorType));
        // The relay marks rows just after the transport took them (or the dead letters did), so the marks may lag a moment.
        await Eventually.UntilAsync(
            async () =>
            {
                foreach (var row in refused.Concat(good))
                {
                    if ((await relay.Store.GetAsync(row.Id))!.SentAt is null)
                    {
                        return false;
                    }
                }

                return true;
            },
            "every row leaves the pending ones");
    }

    [Fact]
    public async Task Relay_RowsThatKeepFailingAtTheHead_BackOffOnTheirOwn_AndAreDeadLetteredAtTheAttemptCap()
    {
        await using var relay = await RelayHost.StartAsync(await CreateStoreAsync(), maxAttempts: 3);
        var failing = relay.NewRows(3);
        var good = relay.NewRows(2);
        relay.Fail = envelope => failing.Any(r => r.Envelope.MessageId == envelope.MessageId)
            ? new InvalidOperationException("The broker is busy for this destination.")
            : null;

        await relay.Store.AddAsync([.. failing, .. good]);

        await relay.RunUntilAsync(() => relay.SentIds.Count == 2, "the rows behind the failing ones are sent");
        await relay.RunUntilAsync(
            () => relay.DeadLetterStore.ListAsync(relay.DeadLetterQuery).AsTask().Result.Count == 3,
            "the failing rows are dead-lettered after three attempts each");
        Assert.Equal(good.Select(r => r.Envelope.MessageId), relay.SentIds);
        var deadLetters = await relay.DeadLettersAsync();
        Assert.All(deadLetters, d => Assert.Equal(DeadLetterCause.SendRejected, d.Cause));
        Assert.All(deadLetters, d => Assert.Equal(3, d.AttemptCount));
        Assert.All(deadLetters, d => Assert.Contains("gave up after 3 failed sends", d.ErrorMessage, StringComparison.Ordinal));
        Assert.Equal(9, relay.Attempts.Count(id => failing.Any(r => r.Envelope.MessageId == id)));
    }

    // A row at the attempt cap whose dead letter could not be written was left due, so the relay sent it again on every poll
    // (and every commit's wake-up) for as long as the dead-letter store failed, instead of waiting out its back-off.
    [Fact]
    public async Task Relay_ARowAtTheAttemptCapWhoseDeadLetterWriteFails_BacksOffLikeAnyFailure_AndIsDeadLetteredOnceTheStoreIsBack()
    {
        var deadLetters = new FaultyDeadLetterStore { Failing = true };
        await using var relay = await RelayHost.StartAsync(await CreateStoreAsync(), maxAttempts: 1, deadLetters, minBackoff: TimeSpan.FromHours(1));
        var failing = relay.NewRows(1)[0];
        var good = relay.NewRows(2);
        relay.Fail = envelope => envelope.MessageId == failing.Envelope.MessageId ? new InvalidOperationException("The broker is busy for this destination.") : null;
        int FailingAttempts() => relay.Attempts.Count(id => id == failing.Envelope.MessageId);

        // A row sent beside it keeps the relay from backing off as a whole: it polls on, every 100 ms.
        await relay.Store.AddAsync([failing, good[0]]);
        await relay.RunUntilAsync(() => relay.SentIds.Count == 1 && deadLetters.Refused >= 1, "the dead letter of the row at the cap is refused");
        await relay.Store.AddAsync([good[1]]);
        await relay.RunUntilAsync(() => relay.SentIds.Count == 2, "a row added later is sent on a later poll");
        Assert.Equal(1, FailingAttempts());

        deadLetters.Failing = false;
        relay.Clock.Advance(TimeSpan.FromHours(1));
        await relay.RunUntilAsync(() => relay.DeadLetterStore.ListAsync(relay.DeadLetterQuery).AsTask().Result.Count == 1, "the row is dead-lettered once its back-off passed");
        Assert.Equal(2, FailingAttempts());
        Assert.Equal(failing.Envelope.MessageId, Assert.Single(await relay.DeadLettersAsync()).Envelope.MessageId);
    }

    [Fact]
    public async Task Relay_ADelayedMessageIsDueFromWhenItWasEnqueued_SoALaggingRelayAsksOnlyForTheRestOfTheDelay()
    {
        // A saga timeout of 30 s enqueued at T must fire at T + 30 s however late the relay gets to it (outage, backlog,
        // failover): the relay asks the transport for what is left of the delay, and sends at once what is already due.
        await using var relay = await RelayHost.StartAsync(await CreateStoreAsync());
        var enqueuedAt = relay.Clock.GetUtcNow();
        var rows = relay.NewRows(2).Select(r => r with { CreatedAt = enqueuedAt, DeliverAt = enqueuedAt.AddSeconds(30) }).ToArray();
        var (early, late) = (rows[0].Envelope.MessageId, rows[1].Envelope.MessageId);
        var down = new System.Collections.Concurrent.ConcurrentDictionary<Guid, bool> { [early] = true, [late] = true };
        relay.Fail = envelope => down.ContainsKey(envelope.MessageId) ? new InvalidOperationException("The broker is down.") : null;
        await relay.Store.AddAsync(rows);
        await relay.RunUntilAsync(() => relay.Attempts.Contains(early) && relay.Attempts.Contains(late), "the relay tries both while the broker is down");

        down.TryRemove(early, out _);
        relay.Clock.SetUtcNow(enqueuedAt.AddSeconds(20));
        await relay.RunUntilAsync(() => relay.Transport.Delays.ContainsKey(early), "the first row goes once the broker is back, 20 s late");
        // The clock steps on while the relay is woken, so "about 10 s" allows for those steps, not for the 20 s of lag.
        Assert.InRange(relay.Transport.Delays[early]!.Value, TimeSpan.FromSeconds(9), TimeSpan.FromSeconds(10));

        down.TryRemove(late, out _);
        relay.Clock.SetUtcNow(enqueuedAt.AddSeconds(40));
        await relay.RunUntilAsync(() => relay.Transport.Delays.ContainsKey(late), "the second row goes once the broker is back, after it was due");
        Assert.Null(relay.Transport.Delays[late]);
    }

    [Fact]
    public async Task Relay_ADelayAtTheTransportsLimit_AddedOnANodeWhoseClockIsAhead_IsSentWithTheLimit_NotDeadLettered()
    {
        // A node whose clock runs a minute ahead of the relay's adds a message delayed by the transport's whole MaxDelay (the
        // add checks it on its own clock): on the relay's clock a minute more is left than the transport holds, and the relay
        // dead-lettered it as refused. A due time far past the limit is still refused.
        await using var relay = await RelayHost.StartAsync(await CreateStoreAsync());
        var maxDelay = TimeSpan.FromDays(1);
        relay.Transport.Capabilities = relay.Transport.Capabilities with { MaxDelay = maxDelay };
        var rows = relay.NewRows(2);
        var (skewed, tooFar) = (rows[0] with { DeliverAt = relay.Clock.GetUtcNow() + TimeSpan.FromMinutes(1) + maxDelay }, rows[1] with { DeliverAt = relay.Clock.GetUtcNow() + maxDelay + TimeSpan.FromHours(1) });
        await relay.Store.AddAsync([skewed, tooFar]);

        await relay.RunUntilAsync(
            () => relay.Transport.Delays.ContainsKey(skewed.Envelope.MessageId) || relay.DeadLetterStore.ListAsync(relay.DeadLetterQuery).AsTask().Result.Count == 2,
            "the relay settles both rows");
        await relay.RunUntilAsync(() => relay.DeadLetterStore.ListAsync(relay.DeadLetterQuery).AsTask().Result.Count >= 1, "the row far past the limit is dead-lettered");

        Assert.Equal(maxDelay, Assert.Contains(skewed.Envelope.MessageId, relay.Transport.Delays));
        var deadLetter = Assert.Single(await relay.DeadLettersAsync());
        Assert.Equal(tooFar.Envelope.MessageId, deadLetter.Envelope.MessageId);
        Assert.Equal(DeadLetterCause.SendRejected, deadLetter.Cause);
    }

    [Fact]
    public async Task Relay_ADelayedMessageDeadLetteredBeforeItIsDue_KeepsItsDueTime_AndARetryFromTheDeadLettersWaitsForIt()
    {
        // The broker stays down past the attempt cap while a saga timeout waits for its due time two hours on: the dead letter
        // kept no due time, so retrying it sent it at once and the timeout fired early.
        await using var relay = await RelayHost.StartAsync(await CreateStoreAsync(), maxAttempts: 3);
        var dueAt = relay.Clock.GetUtcNow().AddHours(2);
        var rows = relay.NewRows(3).Select(r => r with { DeliverAt = dueAt }).ToArray();
        var down = new System.Collections.Concurrent.ConcurrentDictionary<Guid, bool>(rows.Select(r => KeyValuePair.Create(r.Envelope.MessageId, true)));
        relay.Fail = envelope => down.ContainsKey(envelope.MessageId) ? new InvalidOperationException("The broker is down.") : null;
        await relay.Store.AddAsync(rows);
        await relay.RunUntilAsync(
            () => relay.DeadLetterStore.ListAsync(relay.DeadLetterQuery).AsTask().Result.Count == 3,
            "the rows are dead-lettered after three attempts each, long before they are due");

        var deadLetters = await relay.DeadLettersAsync();
        Assert.All(deadLetters, d => Assert.Equal(dueAt, DateTimeOffset.Parse(d.Envelope.GetHeader(HeaderNames.DeliverAt)!, CultureInfo.InvariantCulture)));
        down.Clear();
        var (early, tooFar, late) = (deadLetters[0], deadLetters[1], deadLetters[2]);
        var manager = new DeadLetterManager(relay.DeadLetterStore, relay.Transport, relay.Clock);

        relay.Clock.SetUtcNow(dueAt.AddMinutes(-30));
        Assert.Equal(DeadLetterRetryOutcome.Retried, await manager.RetryAsync(early.Id));
        Assert.Equal(TimeSpan.FromMinutes(30), relay.Transport.Delays[early.Envelope.MessageId]);
        Assert.Null(relay.Transport.Sent.Single(s => s.Envelope.MessageId == early.Envelope.MessageId).Envelope.GetHeader(HeaderNames.DeliverAt));

        // What is left of the delay is past what the transport holds: refused as the relay refuses it, and kept.
        relay.Transport.Capabilities = relay.Transport.Capabilities with { MaxDelay = TimeSpan.FromMinutes(10) };
        Assert.Equal(DeadLetterRetryOutcome.Failed, await manager.RetryAsync(tooFar.Id));
        Assert.Contains("longer than the transport's limit", (await manager.GetAsync(tooFar.Id))!.LastRetryError, StringComparison.Ordinal);
        Assert.DoesNotContain(tooFar.Envelope.MessageId, relay.SentIds);

        relay.Clock.SetUtcNow(dueAt.AddMinutes(1));
        Assert.Equal(new DeadLetterRetryResult(2, 0), await manager.RetryAllAsync(relay.DeadLetterQuery));
        Assert.Null(relay.Transport.Delays[late.Envelope.MessageId]);
        Assert.Null(relay.Transport.Delays[tooFar.Envelope.MessageId]);
    }

    [Fact]
    public async Task Relay_ATopicRowDeadLettered_IsPublishedToTheTopicOnRetry_WhileAQueueRowIsStillSentToTheQueue()
    {
        // The broker refuses a published event (a saga's, a scheduled one) past the attempt cap: its dead letter recorded only
        // the topic's name as its endpoint, so a retry sent it to a queue of that name (on RabbitMQ a new queue nobody reads)
        // and the subscribers never got it.
        await using var relay = await RelayHost.StartAsync(await CreateStoreAsync(), maxAttempts: 2);
        var dueAt = relay.Clock.GetUtcNow().AddHours(2);
        var rows = relay.NewRows(2);
        var (topicRow, queueRow) = (rows[0] with { DestinationKind = OutboxDestinationKind.Topic, DeliverAt = dueAt }, rows[1]);
        var down = true;
        relay.Fail = _ => down ? new InvalidOperationException("The broker is down.") : null;
        await relay.Store.AddAsync([topicRow, queueRow]);
        await relay.RunUntilAsync(
            () => relay.DeadLetterStore.ListAsync(relay.DeadLetterQuery).AsTask().Result.Count == 2, "both rows are dead-lettered after two attempts each");

        var deadLetters = (await relay.DeadLettersAsync()).ToDictionary(d => d.Envelope.MessageId);
        Assert.Equal(topicRow.Destination, deadLetters[topicRow.Envelope.MessageId].Envelope.GetHeader(HeaderNames.DeadLetterTopic));
        Assert.Null(deadLetters[queueRow.Envelope.MessageId].Envelope.GetHeader(HeaderNames.DeadLetterTopic));
        down = false;

        relay.Clock.SetUtcNow(dueAt.AddMinutes(-30));
        var manager = new DeadLetterManager(relay.DeadLetterStore, relay.Transport, relay.Clock);
        Assert.Equal(new DeadLetterRetryResult(2, 0), await manager.RetryAllAsync(relay.DeadLetterQuery));

        var published = Assert.Single(relay.Transport.Published, p => p.Envelope.MessageId == topicRow.Envelope.MessageId);
        Assert.Equal(topicRow.Destination, published.Topic);
        Assert.Null(published.Envelope.GetHeader(HeaderNames.DeadLetterTopic));
        Assert.Equal(TimeSpan.FromMinutes(30), relay.Transport.Delays[topicRow.Envelope.MessageId]);
        Assert.DoesNotContain(relay.Transport.Published, p => p.Envelope.MessageId == queueRow.Envelope.MessageId);
        Assert.Contains(relay.Transport.Sent, s => s.Destination == queueRow.Destination && s.Envelope.MessageId == queueRow.Envelope.MessageId);
    }

    /// <summary>A host running the outbox relay over the store under test, the in-memory transport and a fake clock.</summary>
    private sealed class RelayHost : IAsyncDisposable
    {
        private readonly IHost _host;
        private readonly string _destination = "conformance-relay-" + Guid.NewGuid().ToString("N")[..12];
        private readonly System.Collections.Concurrent.ConcurrentQueue<Guid> _attempts = new();

        private RelayHost(IHost host, IOutboxStore store, RecordingTransport transport, FakeTimeProvider clock)
        {
            _host = host;
            Store = store;
            Transport = transport;
            Clock = clock;
        }

        public IOutboxStore Store { get; }

        public RecordingTransport Transport { get; }

        public FakeTimeProvider Clock { get; }

        /// <summary>Decides, per envelope sent to this host's destination, the exception that fails its send (null sends it).</summary>
        public Func<Envelope, Exception?>? Fail { get; set; }

        public IDeadLetterStore DeadLetterStore => _host.Services.GetRequiredService<IDeadLetterStore>();

        public DeadLetterQuery DeadLetterQuery => new() { Endpoint = _destination };

        /// <summary>Every send tried on this host's destination, failed or not.</summary>
        public IReadOnlyList<Guid> Attempts => [.. _attempts];

        public IReadOnlyList<Guid> SentIds => [.. Transport.Sent.Where(s => s.Destination == _destination).Select(s => s.Envelope.MessageId)];

        public static async Task<RelayHost> StartAsync(IOutboxStore store, int maxAttempts = 100, IDeadLetterStore? deadLetters = null, TimeSpan? minBackoff = null)
        {
            // After every row of the suite is due: rows left pending by other tests go out at once, without a delay.
            var clock = new FakeTimeProvider(BaseTime.AddDays(1));
            var transport = new RecordingTransport(new InMemoryTransport(InMemoryTransportOptions.Default, clock));
            var builder = Host.CreateApplicationBuilder();
            builder.Logging.ClearProviders();
            builder.Services.AddSingleton<TimeProvider>(clock);
            builder.Services.AddHerald(h => h.UseTransport(_ => transport).UseOutbox(o =>
            {
                o.PollInterval = TimeSpan.FromMilliseconds(100);
                o.MinBackoff = minBackoff ?? TimeSpan.FromMilliseconds(100);
                o.MaxBackoff = minBackoff ?? TimeSpan.FromSeconds(1);
                o.MaxAttempts = maxAttempts;
            }));
            builder.Services.AddSingleton(store);
            if (deadLetters is not null)
            {
                builder.Services.AddSingleton(deadLetters);
            }

            var host = builder.Build();
            var relay = new RelayHost(host, store, transport, clock);
            transport.FailSend = (destination, envelope) =>
            {
                if (destination != relay._destination)
                {
                    return null;
                }

                relay._attempts.Enqueue(envelope.MessageId);
                return relay.Fail?.Invoke(envelope);
            };
            await host.StartAsync();
            return relay;
        }

        /// <summary>Rows for this host's destination, each with its own message id and no partition key.</summary>
        public OutboxMessage[] NewRows(int count) =>
        [
            .. Enumerable.Range(0, count).Select(_ => NewMessage(partitionKey: null) with
            {
                Destination = _destination,
                DeliverAt = null,
                Envelope = TestEnvelopes.Create(partitionKey: null) with { DeliveryAttempt = 0 },
            }),
        ];

        public ValueTask<IReadOnlyList<DeadLetter>> DeadLettersAsync() => DeadLetterStore.ListAsync(DeadLetterQuery);

        /// <summary>Polls until the condition holds, moving the clock on between looks so back-offs and polls elapse.</summary>
        public Task RunUntilAsync(Func<bool> condition, string description) =>
            Eventually.UntilAsync(
                () =>
                {
                    if (condition())
                    {
                        return true;
                    }

                    Clock.Advance(TimeSpan.FromMilliseconds(100));
                    return false;
                },
                description);

        public async ValueTask DisposeAsync()
        {
            await _host.StopAsync();
            _host.Dispose();
        }
    }
}
