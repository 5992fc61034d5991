using System.Text.Json.Nodes;
using Herald.EventSourcing;
using Herald.EventSourcing.Aggregates;
using Herald.EventSourcing.Subscriptions;
using Herald.EventSourcing.Upcasting;
using Herald.Messages;
using Microsoft.Extensions.Time.Testing;
using Xunit;

namespace Herald.Conformance.EventSourcing;

public abstract partial class EventStoreConformance
{
    [Fact]
    public async Task Upcasting_ReadStream_ChainsV1ThroughV3()
    {
        var type = NewCategory() + "-person-named";
        var store = Store.WithUpcasting(PersonUpcasters(type));
        var stream = NewStream();
        await store.AppendAsync(stream, ExpectedVersion.NoStream,
        [
            NewEvent(type, "{\"name\":\"Ada Lovelace\"}", 1),
            NewEvent(type, "{\"first\":\"Alan\",\"last\":\"Turing\"}", 2),
            NewEvent(type, "{\"first\":\"Grace\",\"last\":\"Hopper\",\"title\":\"Rear Admiral\"}", 3),
        ]);

        var events = await ReadStreamAsync(store, stream);
        var backward = await ReadStreamAsync(store, stream, ReadDirection.Backward, long.MaxValue);

        Assert.All(events, e => Assert.Equal(3, e.Envelope.SchemaVersion));
        Assert.Equal(("Ada", "Lovelace", "none"), Person(events[0]));
        Assert.Equal(("Alan", "Turing", "none"), Person(events[1]));
        Assert.Equal(("Grace", "Hopper", "Rear Admiral"), Person(events[2]));
        Assert.Equal(("Ada", "Lovelace", "none"), Person(backward[2]));
        Assert.Equal(1, (await ReadStreamAsync(Store, stream))[0].Envelope.SchemaVersion);
    }

    [Fact]
    public async Task Upcasting_ReadAll_UpcastsEveryEvent()
    {
        var type = NewCategory() + "-person-named";
        var store = Store.WithUpcasting(PersonUpcasters(type));
        var head = await store.GetLastPositionAsync();
        await store.AppendAsync(NewStream(), ExpectedVersion.NoStream, [NewEvent(type, "{\"name\":\"Ada Lovelace\"}", 1), NewEvent("not-upcast", "{\"x\":1}")]);

        var events = await ReadAllAsync(store, head, EventFilter.ForEventTypes(type, "not-upcast"));

        Assert.Equal(("Ada", "Lovelace", "none"), Person(events.Single(e => e.EventType == type)));
        Assert.Equal("{\"x\":1}"u8.ToArray(), events.Single(e => e.EventType == "not-upcast").Envelope.Body.ToArray());
    }

    [Fact]
    public async Task Upcasting_Subscription_ReceivesUpcastEvents()
    {
        var type = NewCategory() + "-person-named";

        var delivered = await SubscribeThenAppendAsync(Store.WithUpcasting(PersonUpcasters(type)), type, NewEvent(type, "{\"name\":\"Ada Lovelace\"}", 1));

        Assert.Equal(("Ada", "Lovelace", "none"), Person(delivered));
    }

    [Fact]
    public async Task Upcasting_AggregateLoad_UpcastsStoredEventsBeforeApplyingThem()
    {
        var store = Store.WithUpcasting(CounterUpcasters());
        var repository = CounterRepository(store, snapshotEvery: 0);
        var id = Guid.NewGuid().ToString("N");
        await store.AppendAsync(repository.StreamNameFor(id), ExpectedVersion.NoStream,
        [
            NewEvent(ConformanceCounter.IncrementedType, "{\"value\":2}", 1),
            NewEvent(ConformanceCounter.IncrementedType, "{\"amount\":3}", 2),
            NewEvent(ConformanceCounter.IncrementedType, "{\"amount\":4,\"note\":\"v3\"}", 3),
        ]);

        var counter = await repository.LoadAsync(id);

        Assert.Equal(9, counter.Total);
        Assert.Equal(3, counter.Version);
        Assert.Equal(["upcast", "upcast", "v3"], counter.Notes);
    }

    [Fact]
    public async Task Upcasting_Subscription_WhenAnUpcasterThrows_StopsWithTheErrorRatherThanRetryingForever()
    {
        var type = NewCategory() + "-person-named";
        var store = Store.WithUpcasting(new EventUpcasterRegistry().Add(type, 1, _ => throw new FormatException("no name")));
        var head = await store.GetLastPositionAsync();
        var seen = new List<RecordedEvent>();
        await using var subscription = await EventSubscription.StartNewAsync(store, Checkpoints, Collect(seen),
            new EventSubscriptionOptions { SubscriptionId = NewCategory(), StartAfterPosition = head, Filter = EventFilter.ForEventTypes(type) });

        var stream = NewStream();
        await store.AppendAsync(stream, ExpectedVersion.NoStream, [NewEvent(type, "{\"name\":\"Ada Lovelace\"}", 1)]);

        // The upcaster fails the same way on every read: retrying it as if the store were down would loop forever.
        await WithinTimeoutAsync(Task.WhenAny(subscription.Completion), "the subscription to stop");
        var failure = await Assert.ThrowsAsync<EventUpcastingException>(() => subscription.Completion);
        Assert.Contains(stream, failure.Message, StringComparison.Ordinal);
        Assert.Empty(seen);
    }

    [Fact]
    public async Task Upcasting_AggregateLoad_WhenAnUpcasterThrows_NamesTheStreamAndVersion()
    {
        var store = Store.WithUpcasting(new EventUpcasterRegistry().Add(ConformanceCounter.IncrementedType, 2, _ => throw new FormatException("no amount")));
        var repository = CounterRepository(store, snapshotEvery: 0);
        var id = Guid.NewGuid().ToString("N");
        var stream = repository.StreamNameFor(id);
        await store.AppendAsync(stream, ExpectedVersion.NoStream,
        [
            NewEvent(ConformanceCounter.IncrementedType, "{\"amount\":1,\"note\":\"v3\"}", 3),
            NewEvent(ConformanceCounter.IncrementedType, "{\"amount\":3}", 2),
        ]);

        var failure = await Assert.ThrowsAsync<EventUpcastingException>(() => repository.LoadAsync(id));

        Assert.Contains($"'{stream}'", failure.Message, StringComparison.Ordinal);
        Assert.Contains("version 2", failure.Message, StringComparison.Ordinal);
        Assert.Contains("no amount", failure.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Upcasting_AggregateLoad_FromASnapshot_NeedsNoUpcastOfTheEventsTheSnapshotHolds()
    {
        // Only the events after the snapshot are applied; a first event the upcasters no longer migrate (its step failing
        // or retired) failed the load anyway, as the load read it to see that the stream was not deleted since the snapshot.
        var store = Store.WithUpcasting(new EventUpcasterRegistry().Add(ConformanceCounter.IncrementedType, 1, _ => throw new FormatException("v1 is retired")));
        var repository = CounterRepository(store, snapshotEvery: 0);
        var id = Guid.NewGuid().ToString("N");
        var stream = repository.StreamNameFor(id);
        await store.AppendAsync(stream, ExpectedVersion.NoStream,
        [
            NewEvent(ConformanceCounter.IncrementedType, "{\"value\":2}", 1),
            NewEvent(ConformanceCounter.IncrementedType, "{\"amount\":3,\"note\":\"v3\"}", 3),
            NewEvent(ConformanceCounter.IncrementedType, "{\"amount\":4,\"note\":\"v3\"}", 3),
        ]);
        await Snapshots.SaveSnapshotAsync(new Snapshot(stream, 1, typeof(CounterState).FullName!, 1, "{\"total\":2}"u8.ToArray(), EventTime));

        var counter = await repository.LoadAsync(id);

        Assert.Equal((9, 3L, 2), (counter.Total, counter.Version, counter.EventsApplied));
    }

    [Fact]
    public async Task Upcasting_Rename_ReadStream_ReadsEventsStoredUnderTheFormerNameAsTheCurrentType()
    {
        var (former, current) = (NewCategory() + "-person-added", NewCategory() + "-person-named");
        var store = Store.WithUpcasting(PersonUpcasters(current).AddRename(former, current));
        var stream = NewStream();
        await store.AppendAsync(stream, ExpectedVersion.NoStream,
        [
            NewEvent(former, "{\"name\":\"Ada Lovelace\"}", 1),
            NewEvent(current, "{\"first\":\"Alan\",\"last\":\"Turing\"}", 2),
        ]);

        var events = await ReadStreamAsync(store, stream);
        var backward = await ReadStreamAsync(store, stream, ReadDirection.Backward, long.MaxValue);

        Assert.All(events, e => Assert.Equal((current, 3), (e.EventType, e.Envelope.SchemaVersion)));
        Assert.Equal(("Ada", "Lovelace", "none"), Person(events[0]));
        Assert.Equal(("Alan", "Turing", "none"), Person(events[1]));
        Assert.Equal((current, "Ada"), (backward[1].EventType, Person(backward[1]).First));
        Assert.Equal(former, (await ReadStreamAsync(Store, stream))[0].EventType); // the stored event keeps its name
    }

    [Fact]
    public async Task Upcasting_Rename_ReadAll_AFilterOnEitherNameFindsTheEventsStoredUnderBoth()
    {
        var (former, current) = (NewCategory() + "-person-added", NewCategory() + "-person-named");
        var store = Store.WithUpcasting(PersonUpcasters(current).AddRename(former, current));
        var head = await store.GetLastPositionAsync();
        var stream = NewStream();
        await store.AppendAsync(stream, ExpectedVersion.NoStream,
            [NewEvent(former, "{\"name\":\"Ada Lovelace\"}", 1), NewEvent(current, "{\"name\":\"Alan Turing\"}", 1), NewEvent("not-renamed", "{\"x\":1}")]);

        var byCurrent = await ReadAllAsync(store, head, EventFilter.ForEventTypes(current));
        var byFormer = await ReadAllAsync(store, head, EventFilter.ForEventTypes(former));

        // Only this stream's: the store is shared with the class's other tests, whose late appends (one cancelled while it
        // waited, which may still commit) can land after the head taken above.
        var unfiltered = (await ReadAllAsync(store, head)).Where(e => e.Stream == stream).ToList();

        Assert.Equal(["Ada", "Alan"], byCurrent.Select(e => Person(e).First));
        Assert.All(byCurrent, e => Assert.Equal(current, e.EventType));
        Assert.Equal(["Ada", "Alan"], byFormer.Select(e => Person(e).First));
        Assert.Equal([current, current, "not-renamed"], unfiltered.Select(e => e.EventType));
        Assert.Equal([former], (await ReadAllAsync(Store, head, EventFilter.ForEventTypes(former))).Select(e => e.EventType));
    }

    [Fact]
    public async Task Upcasting_Rename_Subscription_FilteredOnTheCurrentName_ReceivesEventsStoredUnderTheFormerName()
    {
        var (former, current) = (NewCategory() + "-person-added", NewCategory() + "-person-named");
        var store = Store.WithUpcasting(PersonUpcasters(current).AddRename(former, current));

        var delivered = await SubscribeThenAppendAsync(store, current, NewEvent(former, "{\"name\":\"Ada Lovelace\"}", 1));

        Assert.Equal((current, ("Ada", "Lovelace", "none")), (delivered.EventType, Person(delivered)));
    }

    [Fact]
    public async Task Upcasting_Rename_AggregateLoad_AppliesEventsStoredUnderTheFormerName_AndSavesUnderTheCurrentOne()
    {
        var former = NewCategory() + "-counter-added";
        var store = Store.WithUpcasting(CounterUpcasters().AddRename(former, ConformanceCounter.IncrementedType));
        var repository = CounterRepository(store, snapshotEvery: 0);
        var id = Guid.NewGuid().ToString("N");
        var stream = repository.StreamNameFor(id);
        await store.AppendAsync(stream, ExpectedVersion.NoStream,
        [
            NewEvent(former, "{\"amount\":2}", 2),
            NewEvent(ConformanceCounter.IncrementedType, "{\"amount\":3,\"note\":\"v3\"}", 3),
        ]);

        var counter = await repository.LoadAsync(id);
        counter.Increment(4);
        await repository.SaveAsync(counter);

        Assert.Equal(9, counter.Total);
        Assert.Equal(["upcast", "v3", null], counter.Notes);
        Assert.Equal([former, ConformanceCounter.IncrementedType, ConformanceCounter.IncrementedType], (await ReadStreamAsync(Store, stream)).Select(e => e.EventType));
    }

    // Subscribes to store from its head, filtered on filterType, appends stored to a new stream and returns the one event delivered.
    private async Task<RecordedEvent> SubscribeThenAppendAsync(IEventStore store, string filterType, Envelope stored)
    {
        var head = await store.GetLastPositionAsync();
        var seen = new List<RecordedEvent>();
        await using var subscription = await EventSubscription.StartNewAsync(store, Checkpoints, Collect(seen),
            new EventSubscriptionOptions { SubscriptionId = NewCategory(), StartAfterPosition = head, Filter = EventFilter.ForEventTypes(filterType) });

        var result = await store.AppendAsync(NewStream(), ExpectedVersion.NoStream, [stored]);

        await ReachAsync(subscription, result.LastPosition);
        return Delivered(seen).Single();
    }

    // The counter's event from v1 ("value") to v3 ("amount", and "note" set to "upcast").
    private static EventUpcasterRegistry CounterUpcasters() => new EventUpcasterRegistry()
        .Add(ConformanceCounter.IncrementedType, 1, body => new JsonObject { ["amount"] = body["value"]!.GetValue<int>() })
        .Add(ConformanceCounter.IncrementedType, 2, body =>
        {
            body["note"] = "upcast";
            return body;
        });

    private static EventUpcasterRegistry PersonUpcasters(string type) => new EventUpcasterRegistry()
        .Add(type, 1, body =>
        {
            var parts = body["name"]!.GetValue<string>().Split(' ', 2);
            return new JsonObject { ["first"] = parts[0], ["last"] = parts[1] };
        })
        .Add(type, 2, body =>
        {
            body["title"] = "none";
            return body;
        });

    private static (string First, string Last, string Title) Person(RecordedEvent recorded)
    {
        var body = JsonNode.Parse(recorded.Envelope.Body.Span)!;
        return (body["first"]!.GetValue<string>(), body["last"]!.GetValue<string>(), body["title"]!.GetValue<string>());
    }

    private AggregateRepository<ConformanceCounter> CounterRepository(IEventStore store, int snapshotEvery, string? category = null) => new(
        store,
        ConformanceCounter.CreateRegistry(),
        new SystemTextJsonMessageSerializer(),
        new FakeTimeProvider(EventTime),
        Snapshots,
        new AggregateOptions { Category = category ?? NewCategory(), SnapshotEvery = snapshotEvery });
}
