using Herald.Persistence;
using System.Collections.Concurrent;
using System.Diagnostics.Metrics;
using System.Text;
using Herald.Cqrs.Validation;
using Herald.Diagnostics;
using Herald.Handling;
using Herald.Messages;
using Herald.Reliability.DeadLetters;
using Herald.Transport;
using Herald.Conformance;
using Herald.Conformance.Reliability;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;

namespace Herald.Tests.Reliability;

public sealed class FailureInjectionTests
{
    private static readonly TimeSpan MinDelay = TimeSpan.FromSeconds(1);
    private static readonly TimeSpan MaxDelay = TimeSpan.FromSeconds(8);

    [Fact]
    public async Task Handler_FailingKTimesThenSucceeding_TakesEffectOnce()
    {
        var effects = new Effects();
        await using var host = await ReliabilityHost.StartAsync(
            h => h.AddHandler<FlakyHandler>(ServiceLifetime.Singleton)
                .ConfigureRetries(r => r.Immediate(2).Delayed(3, MinDelay, MaxDelay)),
            s => s.AddSingleton(effects));

        // Fails attempts 1-3 in the first delivery, attempt 4 in the first redelivery, succeeds on attempt 5.
        await host.Get<IMessageBus>().SendAsync(new Flaky("a", FailTimes: 4));

        await host.RunUntilAsync(() => effects.Applied.Count == 1, "the message takes effect", TimeSpan.FromSeconds(1));
        Assert.Equal(["a"], effects.Applied);
        Assert.Equal([1, 2, 3, 4, 5], effects.Attempts);
        Assert.Equal(2, host.Transport.NackDelays.Count);
        Assert.Equal(0, await host.DeadLetters.CountAsync(new DeadLetterQuery { Endpoint = host.Endpoint }));
    }

    [Fact]
    public async Task Handler_AlwaysFailing_IsDeadLetteredAfterExactlyTheConfiguredAttempts_WithEveryDelayInsideTheBounds()
    {
        var effects = new Effects();
        await using var host = await ReliabilityHost.StartAsync(
            h => h.AddHandler<FlakyHandler>(ServiceLifetime.Singleton)
                .ConfigureRetries(r => r.Immediate(2).Delayed(4, MinDelay, MaxDelay, factor: 2)),
            s => s.AddSingleton(effects));

        await host.Get<IMessageBus>().SendAsync(new Flaky("doomed", FailTimes: int.MaxValue));

        var deadLetter = Assert.Single(await host.WaitForDeadLettersAsync(step: TimeSpan.FromSeconds(1)));
        Assert.Equal(7, effects.Attempts.Count);
        Assert.Equal(7, deadLetter.AttemptCount);
        Assert.Equal(5, deadLetter.Envelope.DeliveryAttempt);
        Assert.Equal(DeadLetterCause.RetriesExhausted, deadLetter.Cause);
        Assert.Equal(typeof(InvalidOperationException).FullName, deadLetter.ErrorType);
        Assert.Equal("failing attempt 7", deadLetter.ErrorMessage);
        Assert.Contains(nameof(FlakyHandler), deadLetter.StackTrace, StringComparison.Ordinal);
        Assert.Matches("^[0-9a-f]{32}$", deadLetter.Fingerprint);
        Assert.True(deadLetter.FirstFailureTime < deadLetter.LastFailureTime, "the first failure is remembered across redeliveries");
        Assert.Empty(effects.Applied);

        var delays = host.Transport.NackDelays;
        Assert.Equal(4, delays.Count);
        for (var k = 1; k <= delays.Count; k++)
        {
            var ceiling = TimeSpan.FromTicks(Math.Min(MaxDelay.Ticks, MinDelay.Ticks << k));
            Assert.InRange(delays[k - 1], MinDelay, ceiling);
        }

        // Dead-lettered through the store, then acked: never left in the transport's own dead letters.
        Assert.Equal(SettlementKind.Ack, host.Transport.Settlements[^1].Kind);
        Assert.Empty(host.InMemory.GetDeadLetters(host.Endpoint));
    }

    [Fact]
    public async Task VersionConflicts_RunAgainAtOnce_WithoutSpendingTheRetryBudget()
    {
        // An aggregate's stream (or a saga instance) changed by another message meanwhile: the message is not at fault.
        // Ten conflicts in a row, more than the default 2 immediate + 3 delayed retries, used to dead-letter it.
        var effects = new Effects();
        await using var host = await ReliabilityHost.StartAsync(h => h.AddHandler<ConflictingHandler>(ServiceLifetime.Singleton), s => s.AddSingleton(effects));

        await host.Get<IMessageBus>().SendAsync(new Conflicting("busy", Conflicts: 10));

        await Eventually.UntilAsync(() => effects.Applied.Count == 1, "the message takes effect without a redelivery");
        Assert.Equal(Enumerable.Repeat(1, 11), effects.Attempts);
        Assert.Empty(host.Transport.NackDelays);
        Assert.Equal(0, await host.DeadLetters.CountAsync(new DeadLetterQuery { Endpoint = host.Endpoint }));
        Assert.Equal(10, host.Logs.Entries.Count(e => e.EventId == 2014));
    }

    [Fact]
    public async Task VersionConflicts_PastTheirCap_CountAsFailedAttempts()
    {
        // A conflict that never clears (an expected version the handler took from its input) must still end.
        var effects = new Effects();
        await using var host = await ReliabilityHost.StartAsync(
            h => h.AddHandler<ConflictingHandler>(ServiceLifetime.Singleton).ConfigureRetries(r => r.Immediate(1).Delayed(0, MinDelay, MaxDelay)),
            s => s.AddSingleton(effects));

        await host.Get<IMessageBus>().SendAsync(new Conflicting("stuck", Conflicts: int.MaxValue));

        var deadLetter = Assert.Single(await host.WaitForDeadLettersAsync());
        Assert.Equal(DeadLetterCause.RetriesExhausted, deadLetter.Cause);
        Assert.Equal(2, deadLetter.AttemptCount);
        Assert.Equal(typeof(Herald.EventSourcing.ConcurrencyException).FullName, deadLetter.ErrorType);
        Assert.Equal(Herald.Handling.Pipeline.RetryStep.MaxConflictRetries + 2, effects.Attempts.Count);
    }

    [Fact]
    public async Task NeverRetriedException_IsDeadLetteredOnTheFirstAttempt()
    {
        var effects = new Effects();
        await using var host = await ReliabilityHost.StartAsync(h => h.AddHandler<InvalidHandler>(ServiceLifetime.Singleton), s => s.AddSingleton(effects));

        await host.Get<IMessageBus>().SendAsync(new Invalid("x"));

        var deadLetter = Assert.Single(await host.WaitForDeadLettersAsync());
        Assert.Equal(DeadLetterCause.NotRetryable, deadLetter.Cause);
        Assert.Equal(1, deadLetter.AttemptCount);
        Assert.Equal([1], effects.Attempts);
        Assert.Empty(host.Transport.NackDelays);
    }

    [Fact]
    public async Task Redelivery_OfADeadLetteredMessageWhoseAckWasLost_IsStoredOnce_AndARetryFailingAgainIsStoredAnew()
    {
        var effects = new Effects();
        await using var host = await ReliabilityHost.StartAsync(h => h.AddHandler<InvalidHandler>(ServiceLifetime.Singleton), s => s.AddSingleton(effects));
        var sent = RawEnvelope("rel-invalid", """{"Name":"x"}""");

        // The store took the dead letter but the ack was lost (a crash, a dropped connection): the broker delivers it again.
        await host.Transport.SendAsync(host.Endpoint, sent);
        var first = Assert.Single(await host.WaitForDeadLettersAsync());
        await host.Transport.SendAsync(host.Endpoint, sent with { DeliveryAttempt = 2 });
        await Eventually.UntilAsync(() => host.Transport.Settlements.Count == 2, "the redelivery is settled");

        Assert.Equal(first.Id, Assert.Single(await host.DeadLetters.ListAsync(DeadLetterQuery.All)).Id);
        Assert.Equal([1, 1], effects.Attempts);

        // A retry from the dead letters that fails again is a new failure: stored under a new id, not dropped as the one it deletes.
        Assert.Equal(DeadLetterRetryOutcome.Retried, await host.Get<DeadLetterManager>().RetryAsync(first.Id));
        await Eventually.UntilAsync(() => host.Transport.Settlements.Count == 3, "the retry is settled");
        var again = Assert.Single(await host.WaitForDeadLettersAsync());
        Assert.NotEqual(first.Id, again.Id);
        Assert.Equal(sent.MessageId, again.Envelope.MessageId);
    }

    [Fact]
    public async Task RetryPolicyOfAMessageType_OverridesTheGlobalOne()
    {
        var effects = new Effects();
        await using var host = await ReliabilityHost.StartAsync(
            h => h.AddHandler<FlakyHandler>(ServiceLifetime.Singleton)
                .ConfigureRetries(r => r.Immediate(5).Delayed(5, MinDelay, MaxDelay))
                .ConfigureRetries<Flaky>(r => r.Immediate(1).Delayed(0, MinDelay, MaxDelay)),
            s => s.AddSingleton(effects));

        await host.Get<IMessageBus>().SendAsync(new Flaky("short", FailTimes: int.MaxValue));

        var deadLetter = Assert.Single(await host.WaitForDeadLettersAsync());
        Assert.Equal(2, deadLetter.AttemptCount);
        Assert.Equal([1, 2], effects.Attempts);
    }

    public static TheoryData<string> PoisonCases => ["undecodable body", "unknown message type", "empty message type", "default message id", "missing time", "schema version 0"];

    [Theory]
    [MemberData(nameof(PoisonCases))]
    public async Task PoisonInput_IsDeadLetteredAtOnceWithTheReason_AndTheConsumerGoesOn(string poison)
    {
        var effects = new Effects();
        await using var host = await ReliabilityHost.StartAsync(h => h.AddHandler<FlakyHandler>(ServiceLifetime.Singleton), s => s.AddSingleton(effects), concurrency: 1);
        var good = RawEnvelope("rel-flaky", """{"name":"good","failTimes":0}""");
        var (envelope, cause, reason) = poison switch
        {
            "undecodable body" => (RawEnvelope("rel-flaky", "{not json"), DeadLetterCause.Undecodable, "could not be decoded"),
            "unknown message type" => (RawEnvelope("rel-nobody-knows", "{}"), DeadLetterCause.UnknownMessageType, "rel-nobody-knows"),
            "empty message type" => (RawEnvelope(" ", "{}"), DeadLetterCause.InvalidEnvelope, "MessageType is empty"),
            "default message id" => (RawEnvelope("rel-flaky", "{}") with { MessageId = Guid.Empty }, DeadLetterCause.InvalidEnvelope, "MessageId is empty"),
            "missing time" => (RawEnvelope("rel-flaky", "{}") with { Time = default }, DeadLetterCause.InvalidEnvelope, "Time is missing"),
            _ => (RawEnvelope("rel-flaky", "{}") with { SchemaVersion = 0 }, DeadLetterCause.InvalidEnvelope, "SchemaVersion must be 1 or more"),
        };

        await host.Transport.SendAsync(host.Endpoint, envelope);
        await host.Transport.SendAsync(host.Endpoint, good);

        var deadLetter = Assert.Single(await host.WaitForDeadLettersAsync());
        Assert.Equal(cause, deadLetter.Cause);
        Assert.Contains(reason, deadLetter.ErrorMessage, StringComparison.Ordinal);
        Assert.Equal(1, deadLetter.AttemptCount);
        Assert.Equal(envelope.MessageId, deadLetter.Envelope.MessageId);
        Assert.Equal(envelope.Body.ToArray(), deadLetter.Envelope.Body.ToArray());
        await Eventually.UntilAsync(() => effects.Applied.Contains("good"), "the next message is handled");
        Assert.Empty(host.Transport.NackDelays);
    }

    [Fact]
    public async Task DeadLetterStoreFailing_KeepsTheMessageInTheTransportsDeadLetters_AndTheDrainMovesItIntoTheStoreOnceItIsBack()
    {
        var store = new FaultyDeadLetterStore(failures: 2);
        await using var host = await ReliabilityHost.StartAsync(
            h => h.AddHandler<FlakyHandler>(ServiceLifetime.Singleton).ConfigureDeadLetters(o => o.DrainInterval = TimeSpan.FromSeconds(10)),
            s => s.AddSingleton(new Effects()).AddSingleton<IDeadLetterStore>(store));
        var sent = RawEnvelope("rel-flaky", "{not json");

        await host.Transport.SendAsync(host.Endpoint, sent);

        // The store refuses the dispatcher's write: the message goes to the in-memory transport's own dead letters, record in headers.
        await Eventually.UntilAsync(() => host.Transport.Settlements.Count == 1, "the delivery is settled");
        var settlement = host.Transport.Settlements[0];
        Assert.Equal(SettlementKind.DeadLetter, settlement.Kind);
        Assert.Equal(nameof(DeadLetterCause.Undecodable), settlement.Headers[HeaderNames.DeadLetterCause]);
        Assert.Single(host.InMemory.GetDeadLetters(host.Endpoint));
        Assert.Contains(host.Logs.Entries, e => e.EventId == 2002 && e.Level == LogLevel.Error);

        // The first drain finds the store still down (its second failure); a later one moves it, the same record, once.
        var deadLetter = Assert.Single(await host.WaitForDeadLettersAsync(step: TimeSpan.FromSeconds(10)));
        Assert.Equal(settlement.Headers[HeaderNames.DeadLetterId], deadLetter.Id.ToString());
        Assert.Equal(DeadLetterCause.Undecodable, deadLetter.Cause);
        Assert.Equal(typeof(MessageDeserializationException).FullName, deadLetter.ErrorType);
        Assert.Contains("could not be decoded", deadLetter.ErrorMessage, StringComparison.Ordinal);
        Assert.Equal(1, deadLetter.AttemptCount);
        Assert.Equal((sent.MessageId, 1), (deadLetter.Envelope.MessageId, deadLetter.Envelope.DeliveryAttempt));
        Assert.Equal(sent.Body.ToArray(), deadLetter.Envelope.Body.ToArray());
        Assert.Null(deadLetter.Envelope.GetHeader(HeaderNames.DeadLetterCause));
        Assert.Empty(host.InMemory.GetDeadLetters(host.Endpoint));
        Assert.Empty(host.Transport.NackDelays);
        Assert.Contains(host.Logs.Entries, e => e.EventId == 2007);
    }

    [Fact]
    public async Task NativeDrain_ADeadLetterTheStoreKeepsRefusing_StaysInTheTransport_AndTheOnesBehindItAreStored()
    {
        var store = new FaultyDeadLetterStore { Failing = true };
        await using var host = await StartForDrainAsync(store);
        var sent = await SendToNativeDeadLettersAsync(host, 3);

        // The store is back, but rejects the oldest for good: the drain used to stop at it, at every round.
        store.Failing = false;
        store.Refuses = d => d.Envelope.MessageId == sent[0].MessageId;
        var drain = host.Get<NativeDeadLetterDrain>();
        for (var round = 0; round < 2; round++)
        {
            var refusal = await Assert.ThrowsAsync<InvalidOperationException>(async () => await drain.DrainAsync(CancellationToken.None));
            Assert.Contains("rejects", refusal.Message, StringComparison.Ordinal);
            var left = Assert.Single(host.InMemory.GetDeadLetters(host.Endpoint));
            Assert.Equal(sent[0].MessageId, left.Envelope.MessageId);
            var stored = await host.DeadLetters.ListAsync(new DeadLetterQuery { Endpoint = host.Endpoint });
            Assert.Equal(sent.Skip(1).Select(e => e.MessageId).Order(), stored.Select(d => d.Envelope.MessageId).Order());
        }

        Assert.Contains(host.Logs.Entries, e => e.EventId == 2013 && e.Level == LogLevel.Warning);
    }

    [Fact]
    public async Task NativeDrain_StoreDown_StopsTheRoundAfterAFewRefusals_LeavingEveryDeadLetterInTheTransport()
    {
        var store = new FaultyDeadLetterStore { Failing = true };
        await using var host = await StartForDrainAsync(store);
        await SendToNativeDeadLettersAsync(host, NativeDeadLetterDrain.RefusalsToStop + 2);
        var drain = host.Get<NativeDeadLetterDrain>();
        var refused = store.Refused;

        // A store that refuses letter after letter looks down: the round does not try the whole backlog.
        await Assert.ThrowsAsync<InvalidOperationException>(async () => await drain.DrainAsync(CancellationToken.None));

        Assert.Equal(NativeDeadLetterDrain.RefusalsToStop, store.Refused - refused);
        Assert.Equal(NativeDeadLetterDrain.RefusalsToStop + 2, host.InMemory.GetDeadLetters(host.Endpoint).Count);
        Assert.Equal(0, await store.CountAsync(DeadLetterQuery.All));
    }

    // Round 4 (native dead-letter drain): a native dead letter without Herald's dead-letter id got a new id each time a
    // drain read it, so one stored by a drain that then failed to remove it was stored again under another id.
    [Fact]
    public void NativeDeadLetter_WithoutHeraldsId_IsStoredUnderAnIdDerivedFromItsNativeIdentity_TimeOrderedWhenItsTimeIsKnown()
    {
        var time = new DateTimeOffset(2030, 1, 1, 0, 0, 0, TimeSpan.Zero);
        var envelope = RawEnvelope("rel-flaky", "{}");
        NativeDeadLetter Native(string? nativeId, DateTimeOffset? at = null) =>
            new() { Envelope = envelope, Queue = "orders", Reason = "broker dead-lettered it", NativeId = nativeId, Time = at ?? time };
        Guid IdOf(NativeDeadLetter native, int minutesLater = 0) => DeadLetterHeaders.ToDeadLetter(native, time.AddMinutes(minutesLater)).Id;

        // Read twice, later: one id. Another native identity: another id. None: a new id each time.
        var id = IdOf(Native("sqs/orders-dlq/m-1"));
        Assert.Equal(id, IdOf(Native("sqs/orders-dlq/m-1"), minutesLater: 5));
        Assert.NotEqual(id, IdOf(Native("sqs/orders-dlq/m-2")));
        Assert.NotEqual(IdOf(Native(null)), IdOf(Native(null)));

        // Version 7 at the dead letter's time, so it sorts among the store's other ids (retention trims the lowest first).
        Assert.Equal(7, id.Version);
        Assert.True(Guid.CreateVersion7(time.AddMilliseconds(-1)) < id && id < Guid.CreateVersion7(time.AddMilliseconds(1)));
        Assert.Equal(IdOf(Native("x", DateTimeOffset.MinValue)), IdOf(Native("x", DateTimeOffset.MinValue)));

        // Herald's own record wins.
        var recorded = Guid.CreateVersion7();
        var withRecord = Native("sqs/orders-dlq/m-1") with { Envelope = envelope.WithHeader(HeaderNames.DeadLetterId, recorded.ToString()) };
        Assert.Equal(recorded, IdOf(withRecord));
    }

    // A host whose drain runs only when a test calls it (its rounds an hour apart on a clock no one moves).
    private static Task<ReliabilityHost> StartForDrainAsync(FaultyDeadLetterStore store) =>
        ReliabilityHost.StartAsync(
            h => h.AddHandler<FlakyHandler>(ServiceLifetime.Singleton).ConfigureDeadLetters(o => o.DrainInterval = TimeSpan.FromHours(1)),
            s => s.AddSingleton(new Effects()).AddSingleton<IDeadLetterStore>(store));

    // Sends undecodable messages one at a time while the store is down, so they wait in the transport's dead letters in order.
    private static async Task<List<Envelope>> SendToNativeDeadLettersAsync(ReliabilityHost host, int count)
    {
        var sent = new List<Envelope>();
        for (var i = 0; i < count; i++)
        {
            var envelope = RawEnvelope("rel-flaky", "{not json " + i);
            sent.Add(envelope);
            await host.Transport.SendAsync(host.Endpoint, envelope);
            await Eventually.UntilAsync(() => host.InMemory.GetDeadLetters(host.Endpoint).Count == i + 1, $"dead letter {i} waits in the transport");
        }

        return sent;
    }

    [Fact]
    public async Task FirstFailureTime_TravelsWithTheMessage_SoADeadLetterOnAnyNodeKnowsIt()
    {
        var effects = new Effects();
        await using var host = await ReliabilityHost.StartAsync(
            h => h.AddHandler<FlakyHandler>(ServiceLifetime.Singleton).ConfigureRetries(r => r.Immediate(0).Delayed(2, MinDelay, MaxDelay)),
            s => s.AddSingleton(effects));

        // As another node would have left it: its first failure an hour before this node's clock, in its header.
        var firstFailure = host.Clock.GetUtcNow().AddHours(-1);
        var failedBefore = RawEnvelope("rel-flaky", """{"name":"late","failTimes":99}""").WithHeader(HeaderNames.FirstFailure, firstFailure.ToString("O"));
        await host.Transport.SendAsync(host.Endpoint, failedBefore);

        var deadLetter = Assert.Single(await host.WaitForDeadLettersAsync(step: TimeSpan.FromSeconds(1)));
        Assert.Equal(firstFailure, deadLetter.FirstFailureTime);
        Assert.True(deadLetter.LastFailureTime > firstFailure);

        // Each delayed redelivery carried it on.
        var nacks = host.Transport.Settlements.Where(s => s.Kind == SettlementKind.Nack).ToList();
        Assert.Equal(2, nacks.Count);
        Assert.All(nacks, nack => Assert.Equal(firstFailure, DateTimeOffset.Parse(nack.Headers[HeaderNames.FirstFailure], System.Globalization.CultureInfo.InvariantCulture)));
    }

    [Fact]
    public async Task MessageTypeWhoseConstructorThrows_IsDeadLetteredAsUndecodableAtOnce_NeverRetried_Issue10()
    {
        var effects = new Effects();
        await using var host = await ReliabilityHost.StartAsync(
            h => h.AddHandler<FlakyHandler>(ServiceLifetime.Singleton).AddHandler<ValidatedHandler>(ServiceLifetime.Singleton),
            s => s.AddSingleton(effects),
            concurrency: 1);

        await host.Transport.SendAsync(host.Endpoint, RawEnvelope("rel-validated", """{"quantity":-1}"""));
        await host.Transport.SendAsync(host.Endpoint, RawEnvelope("rel-flaky", """{"name":"good","failTimes":0}"""));

        var deadLetter = Assert.Single(await host.WaitForDeadLettersAsync());
        Assert.Equal(DeadLetterCause.Undecodable, deadLetter.Cause);
        Assert.Equal(typeof(MessageDeserializationException).FullName, deadLetter.ErrorType);
        Assert.Contains("quantity must be positive", deadLetter.ErrorMessage, StringComparison.Ordinal);
        Assert.Equal(1, deadLetter.AttemptCount);
        await Eventually.UntilAsync(() => effects.Applied.Contains("good"), "the next message is handled");
        Assert.Empty(host.Transport.NackDelays);
        Assert.DoesNotContain(effects.Attempts, a => a > 1);
    }

    [Fact]
    public async Task Alert_FiresOnceWhenAnEndpointReachesItsThreshold_AndAgainAfterItFellBelow()
    {
        var alerts = new RecordingAlert();
        var alertMeasurements = new ConcurrentQueue<(string Instrument, long Value, string? Endpoint)>();
        using var listener = new MeterListener
        {
            InstrumentPublished = (instrument, l) =>
            {
                if (instrument.Meter.Name == HeraldDiagnostics.Name && instrument.Name is MetricNames.DeadLetterAlerts or MetricNames.DeadLetters)
                {
                    l.EnableMeasurementEvents(instrument);
                }
            },
        };
        listener.SetMeasurementEventCallback<long>((i, v, tags, _) => alertMeasurements.Enqueue((i.Name, v, EndpointOf(tags))));
        listener.Start();
        await using var host = await ReliabilityHost.StartAsync(
            h => h.AddHandler<FlakyHandler>(ServiceLifetime.Singleton)
                .ConfigureDeadLetters(o => o.AlertThreshold = 3)
                .AddDeadLetterAlert<ThrowingAlert>(),
            s => s.AddSingleton(new Effects()).AddSingleton(alerts).AddSingleton<IDeadLetterAlert>(sp => sp.GetRequiredService<RecordingAlert>()),
            concurrency: 1);

        for (var i = 0; i < 2; i++)
        {
            await host.Transport.SendAsync(host.Endpoint, RawEnvelope("rel-unknown", "{}"));
        }

        await host.WaitForDeadLettersAsync(2);
        await Eventually.UntilAsync(() => host.Get<DeadLetterMonitor>().Counts.GetValueOrDefault(host.Endpoint) == 2, "two dead letters are counted");
        Assert.Empty(alerts.Received);

        // Counting runs in the background, off the consumer's path: wait for it rather than for the dead letter.
        await host.Transport.SendAsync(host.Endpoint, RawEnvelope("rel-unknown", "{}"));
        await Eventually.UntilAsync(() => alerts.Received.Count == 1, "the alert fires at the threshold");
        await host.Transport.SendAsync(host.Endpoint, RawEnvelope("rel-unknown", "{}"));
        await host.WaitForDeadLettersAsync(4);
        var monitor = host.Get<DeadLetterMonitor>();
        await Eventually.UntilAsync(() => monitor.Counts.GetValueOrDefault(host.Endpoint) == 4, "the fourth dead letter is counted");

        var alert = Assert.Single(alerts.Received);
        Assert.Equal((host.Endpoint, 3L, 3), (alert.Endpoint, alert.Count, alert.Threshold));
        Assert.Single(host.Logs.Entries, e => e.EventId == 2003 && e.Level == LogLevel.Warning && e.Message.Contains(host.Endpoint, StringComparison.Ordinal));
        Assert.Single(host.Logs.Entries, e => e.EventId == 2004 && e.Message.Contains(nameof(ThrowingAlert), StringComparison.Ordinal));
        Assert.Single(alertMeasurements, m => m.Instrument == MetricNames.DeadLetterAlerts && m.Endpoint == host.Endpoint);
        listener.RecordObservableInstruments();
        Assert.Contains(alertMeasurements, m => m.Instrument == MetricNames.DeadLetters && m.Endpoint == host.Endpoint && m.Value == 4);

        // Emptied and filled again: the alert re-arms.
        await host.Get<DeadLetterManager>().PurgeAsync(new DeadLetterQuery { Endpoint = host.Endpoint });
        for (var i = 0; i < 3; i++)
        {
            await host.Transport.SendAsync(host.Endpoint, RawEnvelope("rel-unknown", "{}"));
        }

        await Eventually.UntilAsync(() => alerts.Received.Count == 2, "the alert fires again");
    }

    [Fact]
    public async Task Alert_WhoseHookHangs_HoldsUpNeitherThePurgeNorTheCountsOfOtherDeadLetters()
    {
        // The monitor raised its alert while holding the lock every refresh takes: a hook that never answered stalled the
        // counts of every endpoint, and every retry and purge of the manager, which refresh through that lock.
        var hanging = new HangingAlert();
        await using var host = await ReliabilityHost.StartAsync(
            h => h.AddHandler<FlakyHandler>(ServiceLifetime.Singleton).ConfigureDeadLetters(o => o.AlertThreshold = 1),
            s => s.AddSingleton(new Effects()).AddSingleton<IDeadLetterAlert>(hanging),
            concurrency: 1);

        await host.Transport.SendAsync(host.Endpoint, RawEnvelope("rel-unknown", "{}"));
        await hanging.Entered.Task.WaitAsync(TimeSpan.FromSeconds(30));

        try
        {
            var purged = await host.Get<DeadLetterManager>().PurgeAsync(new DeadLetterQuery { Endpoint = host.Endpoint }).AsTask().WaitAsync(TimeSpan.FromSeconds(30));
            Assert.Equal(1, purged);
            Assert.Equal(0, host.Get<DeadLetterMonitor>().Counts.GetValueOrDefault(host.Endpoint));
        }
        finally
        {
            hanging.Release.TrySetResult();
        }
    }

    public sealed class HangingAlert : IDeadLetterAlert
    {
        public TaskCompletionSource Entered { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public TaskCompletionSource Release { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public async ValueTask OnThresholdReachedAsync(DeadLetterThresholdReached alert, CancellationToken cancellationToken = default)
        {
            Entered.TrySetResult();
            await Release.Task.ConfigureAwait(false);
        }
    }

    private static string? EndpointOf(ReadOnlySpan<KeyValuePair<string, object?>> tags)
    {
        foreach (var tag in tags)
        {
            if (tag.Key == MetricNames.EndpointTag)
            {
                return tag.Value as string;
            }
        }

        return null;
    }

    internal static Envelope RawEnvelope(string type, string json) => new()
    {
        MessageId = Guid.CreateVersion7(),
        MessageType = type,
        Time = new DateTimeOffset(2030, 1, 2, 3, 0, 0, TimeSpan.Zero),
        Body = Encoding.UTF8.GetBytes(json),
    };

    [MessageType("rel-flaky")]
    public sealed record Flaky(string Name, int FailTimes);

    [MessageType("rel-conflicting")]
    public sealed record Conflicting(string Name, int Conflicts);

    [MessageType("rel-invalid")]
    public sealed record Invalid(string Name);

    [MessageType("rel-validated")]
    public sealed record Validated
    {
        public Validated(int quantity)
        {
            if (quantity <= 0)
            {
                throw new ArgumentException("quantity must be positive", nameof(quantity));
            }

            Quantity = quantity;
        }

        public int Quantity { get; }
    }

    public sealed class ValidatedHandler(Effects effects) : IMessageHandler<Validated>
    {
        public ValueTask HandleAsync(Validated message, MessageContext context, CancellationToken cancellationToken)
        {
            effects.Attempt(context.Attempt);
            return ValueTask.CompletedTask;
        }
    }

    public sealed class Effects
    {
        private readonly ConcurrentQueue<string> _applied = new();
        private readonly ConcurrentQueue<int> _attempts = new();

        public IReadOnlyList<string> Applied => [.. _applied];

        public IReadOnlyList<int> Attempts => [.. _attempts];

        public void Attempt(int attempt) => _attempts.Enqueue(attempt);

        public void Apply(string name) => _applied.Enqueue(name);
    }

    public sealed class FlakyHandler(Effects effects) : IMessageHandler<Flaky>
    {
        public ValueTask HandleAsync(Flaky message, MessageContext context, CancellationToken cancellationToken)
        {
            effects.Attempt(context.Attempt);
            if (context.Attempt <= message.FailTimes)
            {
                throw new InvalidOperationException($"failing attempt {context.Attempt}");
            }

            effects.Apply(message.Name);
            return ValueTask.CompletedTask;
        }
    }

    public sealed class ConflictingHandler(Effects effects) : IMessageHandler<Conflicting>
    {
        private int _runs;

        public ValueTask HandleAsync(Conflicting message, MessageContext context, CancellationToken cancellationToken)
        {
            effects.Attempt(context.Attempt);
            if (Interlocked.Increment(ref _runs) <= message.Conflicts)
            {
                throw new Herald.EventSourcing.ConcurrencyException("order-1", Herald.EventSourcing.ExpectedVersion.Exactly(3), 4);
            }

            effects.Apply(message.Name);
            return ValueTask.CompletedTask;
        }
    }

    public sealed class InvalidHandler(Effects effects) : IMessageHandler<Invalid>
    {
        public ValueTask HandleAsync(Invalid message, MessageContext context, CancellationToken cancellationToken)
        {
            effects.Attempt(context.Attempt);
            throw new ValidationException(typeof(Invalid), [new ValidationError("Name", "is not acceptable")]);
        }
    }

    public sealed class RecordingAlert : IDeadLetterAlert
    {
        private readonly ConcurrentQueue<DeadLetterThresholdReached> _received = new();

        public IReadOnlyList<DeadLetterThresholdReached> Received => [.. _received];

        public ValueTask OnThresholdReachedAsync(DeadLetterThresholdReached alert, CancellationToken cancellationToken = default)
        {
            _received.Enqueue(alert);
            return ValueTask.CompletedTask;
        }
    }

    public sealed class ThrowingAlert : IDeadLetterAlert
    {
        public ValueTask OnThresholdReachedAsync(DeadLetterThresholdReached alert, CancellationToken cancellationToken = default) =>
            throw new InvalidOperationException("the chat service is down");
    }
}
