using Herald.EventSourcing;
using Herald.EventSourcing.Subscriptions;
using Herald.Reliability.DeadLetters;
using Xunit;

namespace Herald.Conformance.EventSourcing;

public abstract partial class EventStoreConformance
{
    [Fact]
    public async Task Subscription_CatchesUpFromTheStartOfTheLog()
    {
        var category = NewCategory();
        var stream = NewStream(category);
        var result = await Store.AppendAsync(stream, ExpectedVersion.NoStream, NewEvents(7));
        var seen = new List<RecordedEvent>();

        await using var subscription = await EventSubscription.StartNewAsync(Store, Checkpoints, Collect(seen),
            new EventSubscriptionOptions { SubscriptionId = NewCategory(), Filter = EventFilter.ForCategory(category), BatchSize = 3 });
        await ReachAsync(subscription, result.LastPosition);

        Assert.Equal(Enumerable.Range(1, 7).Select(v => (long)v), Delivered(seen).Select(e => e.Version));
    }

    [Fact]
    public async Task Subscription_ResumesFromItsCheckpointWithoutRepeats()
    {
        var category = NewCategory();
        var id = NewCategory();
        var head = await Store.GetLastPositionAsync();
        var stream = NewStream(category);
        var first = await Store.AppendAsync(stream, ExpectedVersion.NoStream, NewEvents(3));
        var options = new EventSubscriptionOptions { SubscriptionId = id, StartAfterPosition = head, Filter = EventFilter.ForCategory(category) };
        var firstRun = new List<RecordedEvent>();
        await using (var subscription = await EventSubscription.StartNewAsync(Store, Checkpoints, Collect(firstRun), options))
        {
            await ReachAsync(subscription, first.LastPosition);
        }

        var second = await Store.AppendAsync(stream, ExpectedVersion.Exactly(3), NewEvents(2));
        var secondRun = new List<RecordedEvent>();
        await using (var subscription = await EventSubscription.StartNewAsync(Store, Checkpoints, Collect(secondRun), options))
        {
            await ReachAsync(subscription, second.LastPosition);
        }

        Assert.Equal([1L, 2L, 3L], Delivered(firstRun).Select(e => e.Version));
        Assert.Equal([4L, 5L], Delivered(secondRun).Select(e => e.Version));
        Assert.True(await Checkpoints.GetCheckpointAsync(id) >= second.LastPosition);
    }

    [Fact]
    public async Task Subscription_AfterCatchingUp_DeliversLiveEvents()
    {
        var category = NewCategory();
        var head = await Store.GetLastPositionAsync();
        var stream = NewStream(category);
        var history = await Store.AppendAsync(stream, ExpectedVersion.NoStream, NewEvents(2));
        var seen = new List<RecordedEvent>();
        await using var subscription = await EventSubscription.StartNewAsync(Store, Checkpoints, Collect(seen),
            new EventSubscriptionOptions { SubscriptionId = NewCategory(), StartAfterPosition = head, Filter = EventFilter.ForCategory(category) });
        await ReachAsync(subscription, history.LastPosition);

        var live = new List<AppendResult>();
        for (var i = 0; i < 5; i++)
        {
            live.Add(await Store.AppendAsync(stream, ExpectedVersion.Any, NewEvents(1)));
        }

        await ReachAsync(subscription, live[^1].LastPosition);
        Assert.Equal(Enumerable.Range(1, 7).Select(v => (long)v), Delivered(seen).Select(e => e.Version));
    }

    [Fact]
    public async Task Subscription_FilteredByCategory_DeliversOnlyItAndAdvancesPastOtherEvents()
    {
        var category = NewCategory();
        var head = await Store.GetLastPositionAsync();
        var mine = NewStream(category);
        var seen = new List<RecordedEvent>();
        await using var subscription = await EventSubscription.StartNewAsync(Store, Checkpoints, Collect(seen),
            new EventSubscriptionOptions { SubscriptionId = NewCategory(), StartAfterPosition = head, Filter = EventFilter.ForCategory(category) });

        await Store.AppendAsync(mine, ExpectedVersion.NoStream, NewEvents(2));
        var other = await Store.AppendAsync(NewStream(), ExpectedVersion.NoStream, NewEvents(3));

        // The last event is not in the category, yet the position moves past it: the filter does not hold it back.
        await ReachAsync(subscription, other.LastPosition);
        var delivered = Delivered(seen);
        Assert.Equal(2, delivered.Count);
        Assert.All(delivered, e => Assert.Equal(mine, e.Stream));
    }

    [Fact]
    public async Task Subscription_FilteredByEventType_DeliversOnlyThoseTypes()
    {
        var type = NewCategory() + "-wanted";
        var head = await Store.GetLastPositionAsync();
        var stream = NewStream();
        var seen = new List<RecordedEvent>();
        await using var subscription = await EventSubscription.StartNewAsync(Store, Checkpoints, Collect(seen),
            new EventSubscriptionOptions { SubscriptionId = NewCategory(), StartAfterPosition = head, Filter = EventFilter.ForEventTypes(type) });

        var result = await Store.AppendAsync(stream, ExpectedVersion.NoStream, [NewEvent(type), NewEvent("unwanted"), NewEvent(type), NewEvent("unwanted")]);

        await ReachAsync(subscription, result.LastPosition);
        Assert.Equal([1L, 3L], Delivered(seen).Select(e => e.Version));
    }

    [Fact]
    public async Task Subscription_WithCheckpointEveryN_SavesOnStopAndResumesExactly()
    {
        var category = NewCategory();
        var id = NewCategory();
        var head = await Store.GetLastPositionAsync();
        var stream = NewStream(category);
        var result = await Store.AppendAsync(stream, ExpectedVersion.NoStream, NewEvents(7));
        var options = new EventSubscriptionOptions { SubscriptionId = id, StartAfterPosition = head, Filter = EventFilter.ForCategory(category), CheckpointEvery = 5 };
        await using (var subscription = await EventSubscription.StartNewAsync(Store, Checkpoints, (_, _) => ValueTask.CompletedTask, options))
        {
            await ReachAsync(subscription, result.LastPosition);
        }

        Assert.True(await Checkpoints.GetCheckpointAsync(id) >= result.LastPosition);
        var more = await Store.AppendAsync(stream, ExpectedVersion.Exactly(7), NewEvents(1));
        var seen = new List<RecordedEvent>();
        await using (var subscription = await EventSubscription.StartNewAsync(Store, Checkpoints, Collect(seen), options))
        {
            await ReachAsync(subscription, more.LastPosition);
        }

        Assert.Equal([8L], Delivered(seen).Select(e => e.Version));
    }

    [Fact]
    public async Task Subscription_WhenTheHandlerThrows_FaultsAndKeepsTheCheckpointAtTheLastHandledEvent()
    {
        var category = NewCategory();
        var id = NewCategory();
        var head = await Store.GetLastPositionAsync();
        await Store.AppendAsync(NewStream(category), ExpectedVersion.NoStream, NewEvents(5));
        var events = await ReadAllAsync(head, EventFilter.ForCategory(category));
        var options = new EventSubscriptionOptions { SubscriptionId = id, StartAfterPosition = head, Filter = EventFilter.ForCategory(category) };

        await using var failing = await EventSubscription.StartNewAsync(Store, Checkpoints, (e, _) =>
            e.Version == 3 ? throw new InvalidOperationException("handler failed") : ValueTask.CompletedTask, options);

        var error = await Assert.ThrowsAsync<InvalidOperationException>(() => failing.Completion.WaitAsync(WaitTimeout));
        Assert.Equal("handler failed", error.Message);
        Assert.Equal(events[1].Position, failing.Position);
        Assert.Equal(events[1].Position, await Checkpoints.GetCheckpointAsync(id));
        await Assert.ThrowsAsync<InvalidOperationException>(() => failing.WaitForPositionAsync(events[^1].Position).WaitAsync(WaitTimeout));

        var seen = new List<RecordedEvent>();
        await using var resumed = await EventSubscription.StartNewAsync(Store, Checkpoints, Collect(seen), options);
        await ReachAsync(resumed, events[^1].Position);
        Assert.Equal([3L, 4L, 5L], Delivered(seen).Select(e => e.Version));
    }

    [Fact]
    public async Task Checkpoints_GetSetAndOverwrite()
    {
        var id = NewCategory();

        Assert.Null(await Checkpoints.GetCheckpointAsync(id));
        await Checkpoints.SetCheckpointAsync(id, 42);
        Assert.Equal(42, await Checkpoints.GetCheckpointAsync(id));
        await Checkpoints.SetCheckpointAsync(id, 7);
        Assert.Equal(7, await Checkpoints.GetCheckpointAsync(id));
        await Checkpoints.SetCheckpointAsync(id, 0);
        Assert.Equal(0, await Checkpoints.GetCheckpointAsync(id));
        Assert.Null(await Checkpoints.GetCheckpointAsync(NewCategory()));
    }

    [Fact]
    public async Task Checkpoints_OfIdsHoldingHalfOfASurrogatePair_AreRefused_SoTwoSuchIdsNeverShareOne()
    {
        // SQLite stored such an id as U+FFFD, so "p\uD83D" and "p\uD800" shared one checkpoint (a subscription skipped what
        // the other had handled); PostgreSQL failed with a bare EncoderFallbackException. Every store now refuses the write,
        // and a lookup finds nothing, not a checkpoint stored under U+FFFD.
        var id = NewCategory();
        await Checkpoints.SetCheckpointAsync(id + "\uFFFD", 9);

        var refused = await Assert.ThrowsAsync<ArgumentException>(async () => await Checkpoints.SetCheckpointAsync(id + "\uD83D", 5));

        Assert.Equal("subscriptionId", refused.ParamName);
        Assert.Contains($"The subscription id '{id}?' holds half of a surrogate pair", refused.Message, StringComparison.Ordinal);
        Assert.Null(await Checkpoints.GetCheckpointAsync(id + "\uD800"));
        Assert.Equal(9, await Checkpoints.GetCheckpointAsync(id + "\uFFFD"));
        var paired = id + "\uD83D\uDE00";
        await Checkpoints.SetCheckpointAsync(paired, 7);
        Assert.Equal(7, await Checkpoints.GetCheckpointAsync(paired));
    }

    [Fact]
    public async Task Checkpoints_OfIdsHoldingU0000OrLongerThanTheLimit_AreRefusedOnEveryStore_AndTheLongestAllowedIsKept()
    {
        // PostgreSQL's text cannot hold U+0000, and its index cannot hold an entry past about 2.7 KB: every save of such an
        // id failed there (a bare 22021 or 54000), while memory and SQLite kept it. Every store now refuses both up front.
        var id = NewCategory();
        var nul = await Assert.ThrowsAsync<ArgumentException>(async () => await Checkpoints.SetCheckpointAsync(id + "\0", 1));
        Assert.Equal("subscriptionId", nul.ParamName);
        Assert.Contains($"The subscription id '{id}?' holds U+0000", nul.Message, StringComparison.Ordinal);
        Assert.Null(await Checkpoints.GetCheckpointAsync(id + "\0"));

        // Incompressible text of three UTF-8 bytes a character, so the longest id is also the largest index entry.
        var random = new Random(42);
        string Text(int length) => id + string.Create(length - id.Length, random, static (chars, r) =>
        {
            for (var i = 0; i < chars.Length; i++)
            {
                chars[i] = (char)r.Next(0x4E00, 0xA000);
            }
        });

        foreach (var length in new[] { CheckpointValidation.MaxSubscriptionIdLength + 1, 3_000 })
        {
            var tooLong = Text(length);
            var refused = await Assert.ThrowsAsync<ArgumentException>(async () => await Checkpoints.SetCheckpointAsync(tooLong, 1));
            Assert.Equal("subscriptionId", refused.ParamName);
            Assert.Contains($"has {length} characters; at most {CheckpointValidation.MaxSubscriptionIdLength} are allowed", refused.Message, StringComparison.Ordinal);
            Assert.Null(await Checkpoints.GetCheckpointAsync(tooLong));
        }

        var longest = Text(CheckpointValidation.MaxSubscriptionIdLength);
        await Checkpoints.SetCheckpointAsync(longest, 5);
        Assert.Equal(5, await Checkpoints.GetCheckpointAsync(longest));
    }

    [Fact]
    public void Subscription_WhoseIdHoldsU0000OrIsTooLong_IsRefusedWhenCreated_InsteadOfRetryingEverySaveAsAnOutage()
    {
        // On PostgreSQL every checkpoint save of such an id failed, and the subscription retried it as an outage for ever.
        EventSubscription Create(string id) =>
            new(Store, Checkpoints, (_, _) => ValueTask.CompletedTask, new EventSubscriptionOptions { SubscriptionId = id });

        var id = NewCategory();
        var nul = Assert.Throws<ArgumentException>(() => Create(id + "\0"));
        Assert.Equal("options", nul.ParamName);
        Assert.Contains($"The subscription id '{id}?' holds U+0000", nul.Message, StringComparison.Ordinal);
        var tooLong = Assert.Throws<ArgumentException>(() => Create(id + new string('x', CheckpointValidation.MaxSubscriptionIdLength)));
        Assert.Equal("options", tooLong.ParamName);
        Assert.Contains($"at most {CheckpointValidation.MaxSubscriptionIdLength} are allowed", tooLong.Message, StringComparison.Ordinal);
        Assert.Equal(id, Create(id).SubscriptionId);
    }

    [Fact]
    public async Task Subscription_WhoseFilterOrIdHoldsHalfOfASurrogatePair_IsRefusedWhenCreated_InsteadOfFailingEveryRead()
    {
        // PostgreSQL's client could not encode such a filter: every poll of the subscription failed, and it retried for ever.
        static EventSubscription Create(IEventStore store, ICheckpointStore checkpoints, string id, EventFilter filter) =>
            new(store, checkpoints, (_, _) => ValueTask.CompletedTask, new EventSubscriptionOptions { SubscriptionId = id, Filter = filter });

        var category = NewCategory();
        var refused = Assert.Throws<ArgumentException>(() => Create(Store, Checkpoints, NewCategory(), EventFilter.ForCategory(category + "\uD83D")));
        Assert.Equal("options", refused.ParamName);
        Assert.Contains($"The filter's category '{category}?' holds half of a surrogate pair", refused.Message, StringComparison.Ordinal);
        var type = Assert.Throws<ArgumentException>(() => Create(Store, Checkpoints, NewCategory(), EventFilter.ForEventTypes("thing-happened", "thing\uDE00")));
        Assert.Contains("The filter's event type 'thing?'", type.Message, StringComparison.Ordinal);
        var id = Assert.Throws<ArgumentException>(() => Create(Store, Checkpoints, category + "\uD800", EventFilter.ForCategory(category)));
        Assert.Contains($"The subscription id '{category}?'", id.Message, StringComparison.Ordinal);

        // A whole pair is a name like any other: followed as written.
        var stream = NewStream(category + "\uD83D\uDE00");
        var result = await Store.AppendAsync(stream, ExpectedVersion.NoStream, NewEvents(1));
        var seen = new List<RecordedEvent>();
        await using var paired = await EventSubscription.StartNewAsync(Store, Checkpoints, Collect(seen),
            new EventSubscriptionOptions { SubscriptionId = NewCategory(), Filter = EventFilter.ForCategory(category + "\uD83D\uDE00") });
        await ReachAsync(paired, result.LastPosition);
        Assert.Equal(stream, Assert.Single(Delivered(seen)).Stream);
    }

    [Fact]
    public async Task Subscription_ReachingAStoredEventThatNoLongerReads_StopsNamingItsPosition_InsteadOfRetryingItAsAnOutage()
    {
        // A header another tool set to a number failed every read of the page, and the subscription retried it forever,
        // logged as a store failure.
        var category = NewCategory();
        var head = await Store.GetLastPositionAsync();
        var result = await Store.AppendAsync(NewStream(category), ExpectedVersion.NoStream, NewEvents(3));
        var spoiled = result.LastPosition - 1;
        if (!await OverwriteHeadersColumnAsync(spoiled, """{"spoiled":1}"""))
        {
            return;
        }

        try
        {
            var seen = new List<RecordedEvent>();
            await using var subscription = await EventSubscription.StartNewAsync(Store, Checkpoints, Collect(seen),
                new EventSubscriptionOptions { SubscriptionId = NewCategory(), StartAfterPosition = head, Filter = EventFilter.ForCategory(category) });

            var failure = await Assert.ThrowsAsync<UnreadableEventException>(() => subscription.Completion.WaitAsync(WaitTimeout));
            Assert.Equal(spoiled, failure.Position);
            Assert.Contains($"position {spoiled}", failure.Message, StringComparison.Ordinal);
            Assert.True(subscription.Position < spoiled, "the subscription did not move past the unreadable event");
        }
        finally
        {
            // The log is shared by the class's other tests.
            await OverwriteHeadersColumnAsync(spoiled, null);
        }
    }

    [Fact]
    public async Task Subscription_DeadLetteringUnreadableEvents_MovesAStoredEventThatNoLongerReadsToTheDeadLetters_AndGoesOnPastIt()
    {
        // The subscription could only stop on it (UnreadableEventException): nothing after it was ever handled.
        var category = NewCategory();
        var head = await Store.GetLastPositionAsync();
        var stream = NewStream(category);
        var events = NewEvents(3);
        var result = await Store.AppendAsync(stream, ExpectedVersion.NoStream, events);
        var spoiled = result.LastPosition - 1;
        if (!await OverwriteHeadersColumnAsync(spoiled, """{"spoiled":1}"""))
        {
            return;
        }

        try
        {
            var seen = new List<RecordedEvent>();
            var deadLetters = new InMemoryDeadLetterStore();
            var subscriptionId = NewCategory();
            await using var subscription = await EventSubscription.StartNewAsync(Store, Checkpoints, Collect(seen),
                new EventSubscriptionOptions { SubscriptionId = subscriptionId, StartAfterPosition = head, Filter = EventFilter.ForCategory(category), DeadLetterUnreadableEventsTo = deadLetters });

            await ReachAsync(subscription, result.LastPosition);

            Assert.Equal([spoiled - 1, result.LastPosition], Delivered(seen).Select(e => e.Position));
            var deadLetter = Assert.Single(await deadLetters.ListAsync(new DeadLetterQuery()));
            Assert.Equal(subscriptionId, deadLetter.Endpoint);
            Assert.Equal(DeadLetterOrigin.EventSubscription, deadLetter.Origin);
            Assert.Equal(DeadLetterCause.Undecodable, deadLetter.Cause);
            Assert.Equal(typeof(UnreadableEventException).FullName, deadLetter.ErrorType);
            Assert.Contains($"position {spoiled} (stream '{stream}')", deadLetter.ErrorMessage, StringComparison.Ordinal);

            // What still reads of the row is kept: the event's id, type and bytes.
            Assert.Equal(events[1].MessageId, deadLetter.Envelope.MessageId);
            Assert.Equal(events[1].MessageType, deadLetter.MessageType);
            Assert.Equal(events[1].Body.ToArray(), deadLetter.Envelope.Body.ToArray());
            Assert.False(subscription.Completion.IsCompleted);
        }
        finally
        {
            // The log is shared by the class's other tests.
            await OverwriteHeadersColumnAsync(spoiled, null);
        }
    }

    private static Func<RecordedEvent, CancellationToken, ValueTask> Collect(List<RecordedEvent> into) => (recorded, _) =>
    {
        lock (into)
        {
            into.Add(recorded);
        }

        return ValueTask.CompletedTask;
    };

    private static List<RecordedEvent> Delivered(List<RecordedEvent> collected)
    {
        lock (collected)
        {
            return [.. collected];
        }
    }
}
