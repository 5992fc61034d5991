using System.Collections.Concurrent;
using Herald.EventSourcing;
using Herald.EventSourcing.InMemory;
using Herald.EventSourcing.Subscriptions;
using Herald.Messages;
using Herald.Reliability.DeadLetters;
using Microsoft.Extensions.Time.Testing;

namespace Herald.Tests.EventSourcing;

public sealed class EventStoreBuildingBlocksTests
{
    [Fact]
    public void ExpectedVersion_IsSatisfiedBy_FollowsEachMode()
    {
        Assert.True(ExpectedVersion.Any.IsSatisfiedBy(0) && ExpectedVersion.Any.IsSatisfiedBy(9));
        Assert.True(ExpectedVersion.NoStream.IsSatisfiedBy(0) && !ExpectedVersion.NoStream.IsSatisfiedBy(1));
        Assert.True(!ExpectedVersion.StreamExists.IsSatisfiedBy(0) && ExpectedVersion.StreamExists.IsSatisfiedBy(1));
        Assert.True(ExpectedVersion.Exactly(3).IsSatisfiedBy(3) && !ExpectedVersion.Exactly(3).IsSatisfiedBy(4));
        Assert.False(default(ExpectedVersion).IsSatisfiedBy(0));
        Assert.Equal(ExpectedVersion.NoStream, ExpectedVersion.FromLoadedVersion(0));
    }

    [Fact]
    public void StreamName_CategoryIsThePartBeforeTheFirstDash()
    {
        Assert.Equal("order", StreamName.GetCategory("order-42"));
        Assert.Equal("order", StreamName.GetCategory("order-1b4e-99"));
        Assert.Equal("order", StreamName.GetCategory("order"));
        Assert.Throws<ArgumentException>(() => StreamName.For("shopping-cart", "1"));
        Assert.False(StreamName.IsValid("order\n1", out var error));
        Assert.Contains("U+000A", error, StringComparison.Ordinal);
    }

    // An id from a client that breaks a rule throws a type HTTP can answer 400, still an ArgumentException; the
    // category (from code) breaking one stays a plain ArgumentException, a bug, answered 500.
    [Fact]
    public async Task StreamName_BrokenByTheId_ThrowsInvalidStreamNameException_ThatIsAnArgumentException()
    {
        var tooLong = Assert.Throws<InvalidStreamNameException>(() => StreamName.For("order", new string('x', 300)));
        Assert.Equal("stream", tooLong.ParamName);
        Assert.Contains($"at most {StreamName.MaxLength} are allowed", tooLong.Reason, StringComparison.Ordinal);
        Assert.DoesNotContain("Parameter", tooLong.Reason, StringComparison.Ordinal);

        var empty = Assert.Throws<InvalidStreamNameException>(() => StreamName.For("order", ""));
        Assert.Equal("id", empty.ParamName);
        Assert.Throws<InvalidStreamNameException>(() => StreamName.Validate("order 1"));
        Assert.Throws<ArgumentNullException>(() => StreamName.For("order", null!));
        Assert.IsType<ArgumentException>(Assert.ThrowsAny<ArgumentException>(() => StreamName.For("shopping-cart", "1")), exactMatch: true);

        var store = new InMemoryEventStore();
        await Assert.ThrowsAsync<InvalidStreamNameException>(() => store.AppendAsync(
            "order-" + new string('x', 300),
            ExpectedVersion.Any,
            [new Envelope { MessageId = Guid.CreateVersion7(), MessageType = "t", Time = DateTimeOffset.UnixEpoch, Body = "{}"u8.ToArray() }]).AsTask());
    }

    [Fact]
    public async Task InMemoryStore_KeepsItsOwnCopyOfBodiesAndHeaders()
    {
        var store = new InMemoryEventStore();
        var body = "{\"a\":1}"u8.ToArray();
        var headers = new Dictionary<string, string> { ["h"] = "1" };
        await store.AppendAsync("order-1", ExpectedVersion.NoStream,
            [new Envelope { MessageId = Guid.CreateVersion7(), MessageType = "t", Time = DateTimeOffset.UnixEpoch, Body = body, Headers = headers }]);

        body[1] = (byte)'X';
        headers["h"] = "2";

        await foreach (var e in store.ReadStreamAsync("order-1"))
        {
            Assert.Equal("{\"a\":1}"u8.ToArray(), e.Envelope.Body.ToArray());
            Assert.Equal("1", e.Envelope.GetHeader("h"));
        }
    }

    [Fact]
    public async Task InMemoryStore_StampsRecordedAtFromItsTimeProviderAndHonoursItsLimit()
    {
        var time = new FakeTimeProvider(new DateTimeOffset(2030, 1, 1, 0, 0, 0, TimeSpan.Zero));
        var store = new InMemoryEventStore(new InMemoryEventStoreOptions { TimeProvider = time, MaxEventBytes = 4 });

        await store.AppendAsync("order-1", ExpectedVersion.NoStream, [new Envelope { MessageId = Guid.CreateVersion7(), MessageType = "t", Time = DateTimeOffset.UnixEpoch, Body = "1234"u8.ToArray() }]);
        var ex = await Assert.ThrowsAsync<EventTooLargeException>(() => store.AppendAsync("order-1", ExpectedVersion.Any,
            [new Envelope { MessageId = Guid.CreateVersion7(), MessageType = "t", Time = DateTimeOffset.UnixEpoch, Body = "12345"u8.ToArray() }]).AsTask());

        Assert.Equal((5, 4), (ex.Bytes, ex.Limit));
        await foreach (var e in store.ReadAllAsync())
        {
            Assert.Equal(time.GetUtcNow(), e.RecordedAt);
        }
    }

    [Fact]
    public async Task Subscription_StartedTwice_Throws_AndInvalidOptionsAreRefused()
    {
        var store = new InMemoryEventStore();
        await using var subscription = new EventSubscription(store, store, (_, _) => ValueTask.CompletedTask, new EventSubscriptionOptions { SubscriptionId = "s" });
        await subscription.StartAsync();

        await Assert.ThrowsAsync<InvalidOperationException>(() => subscription.StartAsync());
        Assert.Throws<ArgumentOutOfRangeException>(() => new EventSubscription(store, store, (_, _) => ValueTask.CompletedTask, new EventSubscriptionOptions { SubscriptionId = "s", BatchSize = 0 }));
        Assert.Throws<ArgumentException>(() => new EventSubscription(store, store, (_, _) => ValueTask.CompletedTask, new EventSubscriptionOptions { SubscriptionId = " " }));
    }

    [Fact]
    public async Task Subscription_Stopped_EndsCleanlyAndSavesItsPosition()
    {
        var store = new InMemoryEventStore();
        var result = await store.AppendAsync("order-1", ExpectedVersion.NoStream,
            [new Envelope { MessageId = Guid.CreateVersion7(), MessageType = "t", Time = DateTimeOffset.UnixEpoch, Body = "{}"u8.ToArray() }]);
        var subscription = new EventSubscription(store, store, (_, _) => ValueTask.CompletedTask, new EventSubscriptionOptions { SubscriptionId = "s", CheckpointEvery = 100 });
        await subscription.StartAsync();
        await subscription.WaitForPositionAsync(result.LastPosition).WaitAsync(TimeSpan.FromSeconds(20));

        await subscription.StopAsync();

        Assert.True(subscription.Completion.IsCompletedSuccessfully);
        Assert.Equal(result.LastPosition, await store.GetCheckpointAsync("s"));
        await subscription.DisposeAsync();
    }

    [Fact]
    public async Task Subscription_WhenTheStoreFails_TriesAgainFromItsPosition_InsteadOfFaulting_Issue10()
    {
        var inner = new InMemoryEventStore();
        var store = new FaultyReadsStore(inner) { FailuresLeft = 2 };
        var first = await inner.AppendAsync("order-1", ExpectedVersion.NoStream, [NewEvent()]);
        var seen = new List<long>();
        await using var subscription = await EventSubscription.StartNewAsync(
            store,
            inner,
            (recorded, _) =>
            {
                seen.Add(recorded.Position);
                return ValueTask.CompletedTask;
            },
            new EventSubscriptionOptions { SubscriptionId = "s" });

        await subscription.WaitForPositionAsync(first.LastPosition).WaitAsync(TimeSpan.FromSeconds(20));
        var second = await inner.AppendAsync("order-1", ExpectedVersion.Exactly(1), [NewEvent()]);
        await subscription.WaitForPositionAsync(second.LastPosition).WaitAsync(TimeSpan.FromSeconds(20));

        Assert.False(subscription.Completion.IsCompleted);
        Assert.True(store.FailuresLeft < 0, "the reads failed twice before succeeding");
        Assert.Equal([first.LastPosition, second.LastPosition], seen);
    }

    [Fact]
    public async Task Subscription_AnUnreadableEventItDeadLetters_IsCountedOnTheDeadLetteredCounter()
    {
        // A bare subscription (no host, no monitor) added the dead letter without counting it on herald.messages.dead_lettered.
        var subscriptionId = "unreadable-" + Guid.NewGuid().ToString("N")[..8];
        var counted = new ConcurrentQueue<(long Value, string? Type)>();
        using var listener = Diagnostics.DiagnosticsTests.ListenToDeadLettered(subscriptionId, (value, type) => counted.Enqueue((value, type)));
        var inner = new InMemoryEventStore();
        var spoiled = await inner.AppendAsync("order-1", ExpectedVersion.NoStream, [NewEvent()]);
        var after = await inner.AppendAsync("order-1", ExpectedVersion.Exactly(1), [NewEvent()]);
        var store = new FaultyReadsStore(inner) { UnreadableAt = spoiled.LastPosition };
        var deadLetters = new InMemoryDeadLetterStore();
        await using var subscription = await EventSubscription.StartNewAsync(
            store, inner, (_, _) => ValueTask.CompletedTask, new EventSubscriptionOptions { SubscriptionId = subscriptionId, DeadLetterUnreadableEventsTo = deadLetters });

        await subscription.WaitForPositionAsync(after.LastPosition).WaitAsync(TimeSpan.FromSeconds(20));

        Assert.Single(await deadLetters.ListAsync(new DeadLetterQuery { Endpoint = subscriptionId }));
        Assert.Equal([(1L, "t")], counted);
    }

    private static Envelope NewEvent() => new() { MessageId = Guid.CreateVersion7(), MessageType = "t", Time = DateTimeOffset.UnixEpoch, Body = "{}"u8.ToArray() };
}
