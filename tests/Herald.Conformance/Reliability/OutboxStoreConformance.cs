using Herald.Persistence;
using Herald.Reliability;
using Herald.Reliability.Outbox;
using Xunit;

namespace Herald.Conformance.Reliability;

/// <summary>
/// The contract of <see cref="IOutboxStore"/>. A store's test project derives from it and implements
/// <see cref="CreateStoreAsync"/> and <see cref="BeginUnitOfWorkAsync"/> over its real engine. Tests only look at the
/// messages they added, so the suite tolerates other rows; but counting and fetching assume no other run changes the same
/// outbox at the same time, so give each run its own table (or database) when runs can overlap.
/// </summary>
public abstract partial class OutboxStoreConformance
{
    private static readonly DateTimeOffset BaseTime = new(2030, 1, 2, 3, 4, 5, 678, TimeSpan.Zero);

    /// <summary>Creates the store under test.</summary>
    protected abstract ValueTask<IOutboxStore> CreateStoreAsync();

    /// <summary>Begins a unit of work the store enlists in (for SQL stores: a transaction on the same database).</summary>
    protected abstract ValueTask<IUnitOfWork> BeginUnitOfWorkAsync(IOutboxStore store);

    /// <summary>How many pending messages a fetch reads to find the test's own among any others.</summary>
    protected virtual int FetchWindow => 1000;

    /// <summary>A message with every field set.</summary>
    protected static OutboxMessage NewMessage(string? partitionKey = "key-1", OutboxDestinationKind kind = OutboxDestinationKind.Queue)
    {
        var envelope = TestEnvelopes.Create(partitionKey: partitionKey) with { DeliveryAttempt = 0 };
        return new OutboxMessage
        {
            Id = Guid.CreateVersion7(),
            DestinationKind = kind,
            Destination = kind == OutboxDestinationKind.Queue ? "conformance-queue" : envelope.MessageType,
            Envelope = envelope,
            CreatedAt = BaseTime,
            PartitionKey = partitionKey,
            DeliverAt = BaseTime.AddSeconds(30),
        };
    }

    [Fact]
    public async Task Add_ThenGet_RoundTripsEveryField()
    {
        var store = await CreateStoreAsync();
        var queued = NewMessage();
        var published = NewMessage(partitionKey: null, OutboxDestinationKind.Topic) with { DeliverAt = null };

        await store.AddAsync([queued, published]);

        AssertEqual(queued, (await store.GetAsync(queued.Id))!);
        AssertEqual(published, (await store.GetAsync(published.Id))!);
        Assert.Null(await store.GetAsync(Guid.CreateVersion7()));
    }

    // PostgreSQL kept the envelope's time in UTC to the microsecond, the in-memory outbox kept it as given: a row read back
    // differed per engine. Every engine now keeps it as PostgreSQL does, added alone or in a unit of work.
    [Fact]
    public async Task Add_KeepsTheEnvelopesTimeInUtcToTheMicrosecond_OnEveryEngine()
    {
        var store = await CreateStoreAsync();
        var alone = NewMessage();
        alone = alone with { Envelope = alone.Envelope with { Time = TestEnvelopes.OffsetTimeWithTicks } };
        var inUnitOfWork = NewMessage();
        inUnitOfWork = inUnitOfWork with { Envelope = inUnitOfWork.Envelope with { Time = TestEnvelopes.OffsetTimeWithTicks } };

        await store.AddAsync([alone]);
        var unitOfWork = await BeginUnitOfWorkAsync(store);
        await store.AddAsync([inUnitOfWork], unitOfWork);
        await unitOfWork.CommitAsync();

        TestEnvelopes.AssertKeptInUtcToTheMicrosecond((await store.GetAsync(alone.Id))!.Envelope.Time);
        TestEnvelopes.AssertKeptInUtcToTheMicrosecond((await store.GetAsync(inUnitOfWork.Id))!.Envelope.Time);
        Assert.Equal(TimeSpan.FromHours(2), alone.Envelope.Time.Offset);
    }

    // Regression (stop 41): PostgreSQL kept an outbox row's own times (created, deliver at, sent, next attempt) in UTC to the
    // microsecond, SQLite and the in-memory store kept the caller's offset and every tick: a row read back differed per
    // engine. Every engine now keeps them as PostgreSQL does, added alone or in a unit of work, and as the relay sets them.
    [Fact]
    public async Task Add_RecordFailedAttempt_AndMarkSent_KeepTheRowsOwnTimesInUtcToTheMicrosecond_OnEveryEngine()
    {
        var store = await CreateStoreAsync();
        var at = TestEnvelopes.OffsetTimeWithTicks;
        var alone = NewMessage() with { CreatedAt = at, DeliverAt = at, SentAt = at, Attempts = 1, NextAttemptAt = at };
        var inUnitOfWork = NewMessage() with { CreatedAt = at, DeliverAt = at, Attempts = 1, NextAttemptAt = at };
        var relayed = NewMessage();
        var endOfTime = NewMessage() with { DeliverAt = DateTimeOffset.MaxValue };

        await store.AddAsync([alone, relayed, endOfTime]);
        var unitOfWork = await BeginUnitOfWorkAsync(store);
        await store.AddAsync([inUnitOfWork], unitOfWork);
        await unitOfWork.CommitAsync();
        await store.RecordFailedAttemptAsync(relayed.Id, at);
        var afterFailure = (await store.GetAsync(relayed.Id))!;
        await store.MarkSentAsync([relayed.Id], at);

        foreach (var row in new[] { (await store.GetAsync(alone.Id))!, (await store.GetAsync(inUnitOfWork.Id))! })
        {
            TestEnvelopes.AssertKeptInUtcToTheMicrosecond(row.CreatedAt);
            TestEnvelopes.AssertKeptInUtcToTheMicrosecond(row.DeliverAt!.Value);
            TestEnvelopes.AssertKeptInUtcToTheMicrosecond(row.NextAttemptAt!.Value);
        }

        TestEnvelopes.AssertKeptInUtcToTheMicrosecond((await store.GetAsync(alone.Id))!.SentAt!.Value);
        TestEnvelopes.AssertKeptInUtcToTheMicrosecond(afterFailure.NextAttemptAt!.Value);
        TestEnvelopes.AssertKeptInUtcToTheMicrosecond((await store.GetAsync(relayed.Id))!.SentAt!.Value);

        // The end of time stays the end of time (PostgreSQL's infinity), not a tick before it.
        Assert.Equal(DateTimeOffset.MaxValue, (await store.GetAsync(endOfTime.Id))!.DeliverAt);
        Assert.Equal(TimeSpan.FromHours(2), alone.CreatedAt.Offset);
    }

    [Fact]
    public async Task FetchPending_ReturnsMessagesInTheOrderTheyWereAdded_NotInIdOrder()
    {
        var store = await CreateStoreAsync();

        // Ids out of order on purpose: the store keeps the order of addition (across calls and within one).
        var first = NewMessage("a") with { Id = Guid.CreateVersion7(BaseTime.AddDays(1)) };
        var batch = new[] { NewMessage("b"), NewMessage("a"), NewMessage(null) };
        var last = NewMessage("a") with { Id = Guid.CreateVersion7(BaseTime.AddDays(-1)) };
        await store.AddAsync([first]);
        await store.AddAsync(batch);
        await store.AddAsync([last]);

        var expected = new[] { first.Id }.Concat(batch.Select(m => m.Id)).Append(last.Id).ToList();
        var own = expected.ToHashSet();
        var fetched = (await store.FetchPendingAsync(FetchWindow)).Select(m => m.Id).Where(own.Contains).ToList();
        Assert.Equal(expected, fetched);
    }

    [Fact]
    public async Task FetchPending_TakesAtMostMaxCount()
    {
        var store = await CreateStoreAsync();
        await store.AddAsync([NewMessage(), NewMessage(), NewMessage(), NewMessage()]);

        var fetched = await store.FetchPendingAsync(2);

        Assert.Equal(2, fetched.Count);
        Assert.All(fetched, m => Assert.Null(m.SentAt));
    }

    [Fact]
    public async Task MarkSent_TakesMessagesOutOfPending_AndKeepsTheFirstSentTime()
    {
        var store = await CreateStoreAsync();
        var sent = NewMessage();
        var pending = NewMessage();
        await store.AddAsync([sent, pending]);

        await store.MarkSentAsync([sent.Id], BaseTime.AddMinutes(1));
        await store.MarkSentAsync([sent.Id], BaseTime.AddMinutes(2));

        var ids = (await store.FetchPendingAsync(FetchWindow)).Select(m => m.Id).ToList();
        Assert.DoesNotContain(sent.Id, ids);
        Assert.Contains(pending.Id, ids);
        Assert.Equal(BaseTime.AddMinutes(1), (await store.GetAsync(sent.Id))!.SentAt);
        Assert.Null((await store.GetAsync(pending.Id))!.SentAt);
    }

    [Fact]
    public async Task MarkSent_OfUnknownIds_IsIgnored()
    {
        var store = await CreateStoreAsync();
        var message = NewMessage();
        await store.AddAsync([message]);

        await store.MarkSentAsync([Guid.CreateVersion7(), message.Id], BaseTime);

        Assert.Equal(BaseTime, (await store.GetAsync(message.Id))!.SentAt);
    }

    [Fact]
    public async Task DeleteSent_DeletesOnlyMessagesSentBeforeTheCutoff_NeverPendingOnes()
    {
        var store = await CreateStoreAsync();
        var old = NewMessage();
        var recent = NewMessage();
        var pending = NewMessage();
        await store.AddAsync([old, recent, pending]);
        await store.MarkSentAsync([old.Id], BaseTime);
        await store.MarkSentAsync([recent.Id], BaseTime.AddHours(1));

        while (await store.DeleteSentAsync(BaseTime.AddMinutes(30), 100) == 100)
        {
        }

        Assert.Null(await store.GetAsync(old.Id));
        Assert.NotNull(await store.GetAsync(recent.Id));
        Assert.NotNull(await store.GetAsync(pending.Id));
    }

    [Fact]
    public async Task DeleteSent_DeletesAtMostMaxCount()
    {
        var store = await CreateStoreAsync();
        var messages = new[] { NewMessage(), NewMessage(), NewMessage() };
        await store.AddAsync(messages);
        await store.MarkSentAsync([.. messages.Select(m => m.Id)], BaseTime);

        Assert.Equal(2, await store.DeleteSentAsync(BaseTime.AddSeconds(1), 2));
        while (await store.DeleteSentAsync(BaseTime.AddSeconds(1), 2) > 0)
        {
        }

        foreach (var message in messages)
        {
            Assert.Null(await store.GetAsync(message.Id));
        }
    }

    [Fact]
    public async Task CountPending_CountsUnsentMessages()
    {
        var store = await CreateStoreAsync();
        var before = await store.CountPendingAsync();
        var messages = new[] { NewMessage(), NewMessage(), NewMessage() };

        await store.AddAsync(messages);
        Assert.Equal(before + 3, await store.CountPendingAsync());

        await store.MarkSentAsync([messages[0].Id], BaseTime);
        Assert.Equal(before + 2, await store.CountPendingAsync());
    }

    [Fact]
    public async Task Add_InAUnitOfWork_IsInvisibleUntilItCommits()
    {
        var store = await CreateStoreAsync();
        var message = NewMessage();
        var unitOfWork = await BeginUnitOfWorkAsync(store);

        await store.AddAsync([message], unitOfWork);
        Assert.DoesNotContain(message.Id, (await store.FetchPendingAsync(FetchWindow)).Select(m => m.Id));

        await unitOfWork.CommitAsync();
        Assert.Contains(message.Id, (await store.FetchPendingAsync(FetchWindow)).Select(m => m.Id));
    }

    [Fact]
    public async Task Add_InAUnitOfWorkThatRollsBack_NeverAppears()
    {
        var store = await CreateStoreAsync();
        var message = NewMessage();
        var unitOfWork = await BeginUnitOfWorkAsync(store);

        await store.AddAsync([message], unitOfWork);
        await unitOfWork.RollbackAsync();

        Assert.DoesNotContain(message.Id, (await store.FetchPendingAsync(FetchWindow)).Select(m => m.Id));
        Assert.Null(await store.GetAsync(message.Id));
    }

    /// <summary>Asserts that two outbox messages agree on every field.</summary>
    protected static void AssertEqual(OutboxMessage expected, OutboxMessage actual)
    {
        ArgumentNullException.ThrowIfNull(expected);
        ArgumentNullException.ThrowIfNull(actual);
        Assert.Equal(expected.Id, actual.Id);
        Assert.Equal(expected.DestinationKind, actual.DestinationKind);
        Assert.Equal(expected.Destination, actual.Destination);
        TestEnvelopes.AssertEqual(expected.Envelope, actual.Envelope);
        Assert.Equal(expected.CreatedAt, actual.CreatedAt);
        Assert.Equal(expected.PartitionKey, actual.PartitionKey);
        Assert.Equal(expected.DeliverAt, actual.DeliverAt);
        Assert.Equal(expected.SentAt, actual.SentAt);
        Assert.Equal(expected.Attempts, actual.Attempts);
        Assert.Equal(expected.NextAttemptAt, actual.NextAttemptAt);
    }
}
