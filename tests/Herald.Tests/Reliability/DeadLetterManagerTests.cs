using System.Threading.Channels;
using Herald.Messages;
using Herald.Reliability.DeadLetters;
using Herald.Conformance;
using Herald.Conformance.Reliability;
using Herald.Transport;
using Herald.Transport.InMemory;
using Microsoft.Extensions.Time.Testing;

namespace Herald.Tests.Reliability;

public sealed class DeadLetterManagerTests : IAsyncLifetime
{
    private static readonly DateTimeOffset Start = new(2030, 1, 2, 3, 0, 0, TimeSpan.Zero);
    private readonly FakeTimeProvider _clock = new(Start);
    private readonly InMemoryDeadLetterStore _store = new();
    private readonly InMemoryTransport _inMemory;
    private readonly RecordingTransport _transport;
    private readonly DeadLetterManager _manager;

    public DeadLetterManagerTests()
    {
        _inMemory = new InMemoryTransport(InMemoryTransportOptions.Default, _clock);
        _transport = new RecordingTransport(_inMemory);
        _manager = new DeadLetterManager(_store, _transport, _clock);
    }

    public Task InitializeAsync() => Task.CompletedTask;

    public async Task DisposeAsync() => await _transport.DisposeAsync();

    // A retry reaches the transport as a send does, but was not counted on herald.messages.published.
    [Fact]
    public async Task ARetriedDeadLetter_IsCountedPublishedOnce_ToItsEndpoint()
    {
        var endpoint = "orders-" + Guid.NewGuid().ToString("N")[..8];
        var published = new System.Collections.Concurrent.ConcurrentQueue<long>();
        using var listener = new System.Diagnostics.Metrics.MeterListener
        {
            InstrumentPublished = (instrument, l) =>
            {
                if (instrument.Meter.Name == Herald.Diagnostics.HeraldDiagnostics.Name && instrument.Name == Herald.Diagnostics.MetricNames.MessagesPublished)
                {
                    l.EnableMeasurementEvents(instrument);
                }
            },
        };
        listener.SetMeasurementEventCallback<long>((_, value, tags, _) =>
        {
            foreach (var tag in tags)
            {
                if (tag.Key == Herald.Diagnostics.MetricNames.DestinationTag && tag.Value as string == endpoint)
                {
                    published.Enqueue(value);
                }
            }
        });
        listener.Start();
        var deadLetter = await AddAsync(endpoint);

        Assert.Equal(DeadLetterRetryOutcome.Retried, await _manager.RetryAsync(deadLetter.Id));

        await ReceiveAsync(endpoint);
        Assert.Equal([1L], published);
    }

    [Fact]
    public async Task RetryOne_SendsTheEnvelopeBackToItsEndpoint_ThenDeletesTheDeadLetter()
    {
        var deadLetter = await AddAsync("orders");

        Assert.Equal(DeadLetterRetryOutcome.Retried, await _manager.RetryAsync(deadLetter.Id));

        // Unchanged but for an id of the retry, which gives a dead letter of it, should it fail again, a new id.
        var received = await ReceiveAsync("orders");
        var retry = Guid.Parse(received.GetHeader("herald-dead-letter-retry")!);
        Assert.Equal((7, _clock.GetUtcNow().ToUnixTimeMilliseconds()), (retry.Version, (long)(Convert.ToUInt64(retry.ToString("N")[..12], 16))));
        TestEnvelopes.AssertEqual(deadLetter.Envelope.WithHeader("herald-dead-letter-retry", retry.ToString()) with { DeliveryAttempt = 1 }, received);
        Assert.Null(await _manager.GetAsync(deadLetter.Id));
    }

    [Fact]
    public async Task RetryOne_WhenTheSendFails_KeepsItAndRaisesItsRetryCount()
    {
        var deadLetter = await AddAsync("orders");
        _transport.FailSend = (_, _) => new InvalidOperationException("broker unreachable");
        _clock.Advance(TimeSpan.FromMinutes(5));

        Assert.Equal(DeadLetterRetryOutcome.Failed, await _manager.RetryAsync(deadLetter.Id));
        Assert.Equal(DeadLetterRetryOutcome.Failed, await _manager.RetryAsync(deadLetter.Id));

        var kept = (await _manager.GetAsync(deadLetter.Id))!;
        Assert.Equal(2, kept.RetryCount);
        Assert.Equal("System.InvalidOperationException: broker unreachable", kept.LastRetryError);
        Assert.Equal(Start.AddMinutes(5), kept.LastRetryTime);
        Assert.Equal(deadLetter.ErrorMessage, kept.ErrorMessage);
        Assert.Equal(0, _inMemory.GetReadyCount("orders"));
    }

    [Theory]
    [InlineData(DeadLetterOrigin.StreamProcessor, "stream processor 'stream:totals'")]
    [InlineData(DeadLetterOrigin.EventSubscription, "event subscription 'stream:totals'")]
    [InlineData(DeadLetterOrigin.Projection, "no projection is registered on this host")]
    public async Task RetryOne_OfADeadLetterWhoseOriginNothingHereTakesBack_IsRefused_SendsNothing_AndKeepsItWithTheReason(DeadLetterOrigin origin, string reason)
    {
        // Regression (projection dead letters): a retry sent every dead letter to a queue of its endpoint's name, which for a
        // projection, a subscription or a stream processor nothing consumes, and deleted it as if retried.
        var deadLetter = NewDeadLetter("stream:totals") with { Envelope = TestEnvelopes.Create().WithHeader(HeaderNames.DeadLetterOrigin, origin.ToString()) };
        await _store.AddAsync(deadLetter);
        Assert.Equal(origin, deadLetter.Origin);

        Assert.Equal(DeadLetterRetryOutcome.Refused, await _manager.RetryAsync(deadLetter.Id));

        var kept = (await _manager.GetAsync(deadLetter.Id))!;
        Assert.Contains(reason, kept.LastRetryError, StringComparison.Ordinal);
        Assert.Contains("It stays", kept.LastRetryError, StringComparison.Ordinal);
        Assert.Equal(1, kept.RetryCount);
        Assert.Empty(_transport.Sent);
    }

    [Fact]
    public async Task RetryOne_OfADeadLetterNamingAnOriginThisVersionDoesNotKnow_IsRefused()
    {
        var deadLetter = NewDeadLetter("somewhere") with { Envelope = TestEnvelopes.Create().WithHeader(HeaderNames.DeadLetterOrigin, "Projection, StreamProcessor") };
        await _store.AddAsync(deadLetter);

        Assert.Equal(DeadLetterRetryOutcome.Refused, await _manager.RetryAsync(deadLetter.Id));

        Assert.Contains("does not know", (await _manager.GetAsync(deadLetter.Id))!.LastRetryError, StringComparison.Ordinal);
        Assert.Empty(_transport.Sent);
    }

    [Fact]
    public async Task RetryAll_SendsTheEndpointsDeadLetters_AndCountsTheRefusedOnes_WhichStay()
    {
        await AddAsync("orders");
        var refused = NewDeadLetter("stream:totals") with { Envelope = TestEnvelopes.Create().WithHeader(HeaderNames.DeadLetterOrigin, nameof(DeadLetterOrigin.StreamProcessor)) };
        await _store.AddAsync(refused);

        Assert.Equal(new DeadLetterRetryResult(1, 0) { Refused = 1 }, await _manager.RetryAllAsync());

        Assert.Equal(refused.Id, Assert.Single((await _manager.ListAsync()).Items).Id);
        Assert.Equal("orders", Assert.Single(_transport.Sent).Destination);
    }

    [Fact]
    public async Task RetryOne_OfAnUnknownId_ReportsNotFound()
    {
        Assert.Equal(DeadLetterRetryOutcome.NotFound, await _manager.RetryAsync(Guid.CreateVersion7()));
    }

    [Fact]
    public async Task RetryAll_RetriesEveryMatch_AndASecondRunFindsNothing()
    {
        for (var i = 0; i < 5; i++)
        {
            await AddAsync("orders");
        }

        var other = await AddAsync("billing");
        var filter = new DeadLetterQuery { Endpoint = "orders", Limit = 2 };

        Assert.Equal(new DeadLetterRetryResult(5, 0), await _manager.RetryAllAsync(filter));
        Assert.Equal(new DeadLetterRetryResult(0, 0), await _manager.RetryAllAsync(filter));

        Assert.Equal(5, _inMemory.GetReadyCount("orders"));
        Assert.Equal(0, await _manager.CountAsync(new DeadLetterQuery { Endpoint = "orders" }));
        Assert.NotNull(await _manager.GetAsync(other.Id));
    }

    [Fact]
    public async Task RetryAll_CountsFailures_AndKeepsTheFailedOnes()
    {
        await AddAsync("orders");
        await AddAsync("orders");
        var broken = await AddAsync("broken");
        _transport.FailSend = (queue, _) => queue == "broken" ? new InvalidOperationException("queue missing") : null;

        Assert.Equal(new DeadLetterRetryResult(2, 1), await _manager.RetryAllAsync());

        var left = Assert.Single((await _manager.ListAsync()).Items);
        Assert.Equal(broken.Id, left.Id);
        Assert.Equal(1, left.RetryCount);
    }

    [Fact]
    public async Task RetryAll_DoesNotPickUpMessagesThatFailAgainWhileItRuns()
    {
        for (var i = 0; i < 3; i++)
        {
            await AddAsync("orders");
        }

        // Every retried message fails again at once and comes back as a new dead letter.
        _transport.FailSend = (queue, envelope) =>
        {
            _store.AddAsync(NewDeadLetter(queue) with { Envelope = envelope }).AsTask().GetAwaiter().GetResult();
            return null;
        };

        Assert.Equal(new DeadLetterRetryResult(3, 0), await _manager.RetryAllAsync());
        Assert.Equal(3, await _manager.CountAsync());
    }

    [Fact]
    public async Task RetryAll_WhileDeadLettersKeepComing_RetriesOnlyThoseThatFailedBeforeItBegan()
    {
        // The endpoint still fails while retry-all takes the matching ids: a new dead letter after every page. Before, each
        // landed after the page being read and was taken too, so a retry-all ran for as long as they came faster than a
        // page is read (here, until the store below gives up), retrying messages that failed after it began.
        var (store, manager) = await PurgeSetupAsync();
        var later = new List<Guid>();
        store.AfterList = async () =>
        {
            Assert.True(later.Count < 1000, "The retry-all does not end while dead letters keep coming.");
            _clock.Advance(TimeSpan.FromSeconds(1));
            var deadLetter = NewDeadLetter("orders", "fp", _clock.GetUtcNow()) with { Id = Guid.CreateVersion7(_clock.GetUtcNow()) };
            await _store.AddAsync(deadLetter);
            later.Add(deadLetter.Id);
        };

        Assert.Equal(new DeadLetterRetryResult(25, 0), await manager.RetryAllAsync(new DeadLetterQuery { Endpoint = "orders" }));
        store.AfterList = null;
        Assert.Equal(later.Order(), (await _store.ListAsync(new DeadLetterQuery { Endpoint = "orders" })).Select(d => d.Id));
    }

    [Fact]
    public async Task RetryOne_WhileAnotherRetryOfItIsSending_SendsNothing_SoTheMessageGoesBackOnce()
    {
        // An operator's double click, or a retry-all meeting a retry-one: both read the dead letter before the first
        // deleted it, and both sent it, so its endpoint handled it twice.
        var deadLetter = await AddAsync("orders");
        var sending = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        using var release = new ManualResetEventSlim();
        var sends = 0;
        _transport.FailSend = (_, _) =>
        {
            if (Interlocked.Increment(ref sends) == 1)
            {
                sending.TrySetResult();
                release.Wait(Eventually.DefaultTimeout);
            }

            return null;
        };

        var first = Task.Run(async () => await _manager.RetryAsync(deadLetter.Id));
        await sending.Task.WaitAsync(Eventually.DefaultTimeout);
        var second = await _manager.RetryAsync(deadLetter.Id).AsTask().WaitAsync(Eventually.DefaultTimeout);
        var all = await _manager.RetryAllAsync().AsTask().WaitAsync(Eventually.DefaultTimeout);
        release.Set();

        Assert.Equal(DeadLetterRetryOutcome.Retried, await first.WaitAsync(Eventually.DefaultTimeout));
        Assert.Equal(DeadLetterRetryOutcome.NotFound, second);
        Assert.Equal(new DeadLetterRetryResult(0, 0), all);
        Assert.Equal(1, Volatile.Read(ref sends));
        Assert.Null(await _manager.GetAsync(deadLetter.Id));
    }

    [Fact]
    public async Task List_PagesThroughEveryMatch()
    {
        var added = new List<Guid>();
        for (var i = 0; i < 5; i++)
        {
            added.Add((await AddAsync("orders")).Id);
        }

        var seen = new List<Guid>();
        DeadLetterQuery? query = new() { Endpoint = "orders", Limit = 2 };
        while (query is not null)
        {
            var page = await _manager.ListAsync(query);
            seen.AddRange(page.Items.Select(d => d.Id));
            query = page.Next;
        }

        Assert.Equal(added.Order(), seen);
    }

    [Fact]
    public async Task Purge_DeletesTheMatches_OptionallyOnlyThoseOlderThanATime()
    {
        var old = await AddAsync("orders", failedAt: Start.AddHours(-3));
        var recent = await AddAsync("orders", failedAt: Start.AddMinutes(-5));
        var elsewhere = await AddAsync("billing", failedAt: Start.AddHours(-3));

        Assert.Equal(1, await _manager.PurgeAsync(new DeadLetterQuery { Endpoint = "orders" }, olderThan: Start.AddHours(-1)));
        Assert.Null(await _manager.GetAsync(old.Id));
        Assert.NotNull(await _manager.GetAsync(recent.Id));

        Assert.Equal(1, await _manager.PurgeAsync(new DeadLetterQuery { Endpoint = "orders" }));
        Assert.Equal(1, await _manager.CountAsync());
        Assert.NotNull(await _manager.GetAsync(elsewhere.Id));
    }

    [Fact]
    public async Task Purge_WhileDeadLettersKeepComing_EndsAfterThoseThatMatchedWhenItBegan()
    {
        // The endpoint still fails while it is purged: a new dead letter after every batch. Before, the purge ran on for as
        // long as they came (here, until the store below gives up).
        var (store, manager) = await PurgeSetupAsync();

        var added = 0;
        store.AfterDeleteMany = async () =>
        {
            Assert.True(++added < 1000, "The purge does not end while dead letters keep coming.");
            await _store.AddAsync(NewDeadLetter("orders", "fp", Start.AddMinutes(added)));
        };

        Assert.Equal(25, await manager.PurgeAsync(new DeadLetterQuery { Endpoint = "orders" }));
        Assert.Equal(added, await _manager.CountAsync());
    }

    [Fact]
    public async Task Purge_WhenAnotherDeleterTakesItsFirstBatch_StillDeletesEveryMatch()
    {
        // As PostgreSQL answers a batch whose rows a concurrent purge or trim deleted while this one waited for their locks:
        // those are gone, nothing was deleted here. Before, the purge took that for "none left" and left the other 15.
        var (store, manager) = await PurgeSetupAsync();

        var other = await AddAsync("billing");
        store.DeleteManyOverride = async query =>
        {
            store.DeleteManyOverride = null;
            await _store.DeleteManyAsync(query);
            return 0;
        };

        Assert.Equal(15, await manager.PurgeAsync(new DeadLetterQuery { Endpoint = "orders" }));
        Assert.Equal(0, await _manager.CountAsync(new DeadLetterQuery { Endpoint = "orders" }));
        Assert.NotNull(await _manager.GetAsync(other.Id));
    }

    [Fact]
    public async Task Purge_WhileAnotherDeleterTakesSomeOfItsMatches_LeavesTheDeadLettersThatFailedAfterItBegan()
    {
        // The purge deleted as many as matched when it began: when a trim took 5 of those meanwhile, it made up the count
        // with 5 dead letters of the still failing endpoint that came after it began, messages nobody had seen, lost.
        var (store, manager) = await PurgeSetupAsync();

        var later = new List<Guid>();
        store.AfterDeleteMany = async () =>
        {
            if (later.Count > 0)
            {
                return;
            }

            var oldest = await _store.ListAsync(new DeadLetterQuery { Endpoint = "orders", Limit = 5 });
            foreach (var deadLetter in oldest)
            {
                await _store.DeleteAsync(deadLetter.Id);
            }

            _clock.Advance(TimeSpan.FromSeconds(1));
            for (var i = 0; i < 5; i++)
            {
                var deadLetter = NewDeadLetter("orders", "fp", _clock.GetUtcNow());
                await _store.AddAsync(deadLetter);
                later.Add(deadLetter.Id);
            }
        };

        Assert.Equal(20, await manager.PurgeAsync(new DeadLetterQuery { Endpoint = "orders" }));
        Assert.Equal(5, await _manager.CountAsync());
        foreach (var id in later)
        {
            Assert.NotNull(await _manager.GetAsync(id));
        }
    }

    [Fact]
    public async Task Count_AppliesTheFilter()
    {
        await AddAsync("orders", fingerprint: "a");
        await AddAsync("orders", fingerprint: "b");
        await AddAsync("billing", fingerprint: "a");

        Assert.Equal(3, await _manager.CountAsync());
        Assert.Equal(2, await _manager.CountAsync(new DeadLetterQuery { Fingerprint = "a" }));
        Assert.Equal(1, await _manager.CountAsync(new DeadLetterQuery { Endpoint = "orders", Fingerprint = "a" }));
    }

    private static DeadLetter NewDeadLetter(string endpoint, string fingerprint = "fp", DateTimeOffset? failedAt = null) => new()
    {
        Id = Guid.CreateVersion7(),
        Envelope = TestEnvelopes.Create(),
        Endpoint = endpoint,
        Cause = DeadLetterCause.RetriesExhausted,
        ErrorType = "System.InvalidOperationException",
        ErrorMessage = "the original failure",
        Fingerprint = fingerprint,
        FirstFailureTime = failedAt ?? Start,
        LastFailureTime = failedAt ?? Start,
        AttemptCount = 6,
    };

    private async Task<DeadLetter> AddAsync(string endpoint, string fingerprint = "fp", DateTimeOffset? failedAt = null)
    {
        var deadLetter = NewDeadLetter(endpoint, fingerprint, failedAt);
        await _store.AddAsync(deadLetter);
        return deadLetter;
    }

    /// <summary>25 dead letters of "orders" an hour old and a manager purging 10 at a time through a hooked store.</summary>
    private async Task<(HookedStore Store, DeadLetterManager Manager)> PurgeSetupAsync()
    {
        var store = new HookedStore(_store);
        var manager = new DeadLetterManager(store, _transport, _clock, logger: null, monitor: null, batchSize: 10);
        for (var i = 0; i < 25; i++)
        {
            await AddAsync("orders", failedAt: Start.AddMinutes(-60 + i));
        }

        return (store, manager);
    }

    private async Task<Envelope> ReceiveAsync(string queue)
    {
        var received = Channel.CreateUnbounded<Envelope>();
        await using var consumer = await _transport.ConsumeAsync(queue, ConsumerOptions.Default, (delivery, _) =>
        {
            received.Writer.TryWrite(delivery.Envelope);
            return ValueTask.CompletedTask;
        });
        return await received.Reader.ReadAsync().AsTask().WaitAsync(TimeSpan.FromSeconds(10));
    }

    /// <summary>A store that runs test code around <see cref="IDeadLetterStore.DeleteManyAsync"/>.</summary>
    private sealed class HookedStore(IDeadLetterStore inner) : IDeadLetterStore
    {
        public Func<DeadLetterQuery, Task<int>>? DeleteManyOverride { get; set; }

        public Func<Task>? AfterDeleteMany { get; set; }

        public ValueTask<bool> AddAsync(DeadLetter deadLetter, CancellationToken cancellationToken = default) => inner.AddAsync(deadLetter, cancellationToken);

        public ValueTask AddAsync(DeadLetter deadLetter, Herald.Persistence.IUnitOfWork unitOfWork, Action<bool>? added = null, CancellationToken cancellationToken = default) =>
            inner.AddAsync(deadLetter, unitOfWork, added, cancellationToken);

        public ValueTask<DeadLetter?> GetAsync(Guid id, CancellationToken cancellationToken = default) => inner.GetAsync(id, cancellationToken);

        public Func<Task>? AfterList { get; set; }

        public async ValueTask<IReadOnlyList<DeadLetter>> ListAsync(DeadLetterQuery query, CancellationToken cancellationToken = default)
        {
            var listed = await inner.ListAsync(query, cancellationToken);
            if (AfterList is { } after)
            {
                await after();
            }

            return listed;
        }

        public ValueTask<long> CountAsync(DeadLetterQuery query, CancellationToken cancellationToken = default) => inner.CountAsync(query, cancellationToken);

        public ValueTask<bool> DeleteAsync(Guid id, CancellationToken cancellationToken = default) => inner.DeleteAsync(id, cancellationToken);

        public ValueTask DeleteAsync(Guid id, Herald.Persistence.IUnitOfWork unitOfWork, CancellationToken cancellationToken = default) =>
            inner.DeleteAsync(id, unitOfWork, cancellationToken);

        public async ValueTask<int> DeleteManyAsync(DeadLetterQuery query, CancellationToken cancellationToken = default)
        {
            var deleted = DeleteManyOverride is { } deleteMany ? await deleteMany(query) : await inner.DeleteManyAsync(query, cancellationToken);
            if (AfterDeleteMany is { } after)
            {
                await after();
            }

            return deleted;
        }

        public ValueTask<bool> RecordRetryFailureAsync(Guid id, string error, DateTimeOffset time, CancellationToken cancellationToken = default) =>
            inner.RecordRetryFailureAsync(id, error, time, cancellationToken);
    }
}
