using Herald.EventSourcing;
using Herald.EventSourcing.Aggregates;
using Herald.Conformance.EventSourcing;
using Herald.EventSourcing.InMemory;
using Herald.Messages;
using Herald.Persistence;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Time.Testing;

namespace Herald.Tests.EventSourcing;

public sealed class AggregateRepositoryTests
{
    private static readonly DateTimeOffset Now = new(2026, 5, 6, 7, 8, 9, TimeSpan.Zero);

    [MessageType("ticket-opened")]
    private sealed record TicketOpened(string Id);

    [MessageType("ticket-noted")]
    private sealed record TicketNoted(string Text);

    private sealed record Unregistered;

    private sealed class ShoppingCart : Aggregate
    {
        public List<string> Log { get; } = [];

        public void Open(string id) => Raise(new TicketOpened(id));

        public void Note(string text) => Raise(new TicketNoted(text));

        public void RaiseUnregistered() => Raise(new Unregistered());

        protected override void When(object @event)
        {
            switch (@event)
            {
                case TicketOpened opened:
                    Id = opened.Id;
                    Log.Add("opened");
                    break;
                case TicketNoted { Text: "boom" }:
                    throw new InvalidOperationException("boom refused");
                case TicketNoted noted:
                    Log.Add(noted.Text);
                    break;
            }
        }
    }

    private static (AggregateRepository<ShoppingCart> Repository, InMemoryEventStore Store, FakeTimeProvider Time) Create(AggregateOptions? options = null)
    {
        var store = new InMemoryEventStore();
        var registry = new MessageTypeRegistry();
        registry.Register<TicketOpened>();
        registry.Register<TicketNoted>();
        var time = new FakeTimeProvider(Now);
        return (new AggregateRepository<ShoppingCart>(store, registry, new SystemTextJsonMessageSerializer(), time, store, options), store, time);
    }

    [Fact]
    public void Category_ByDefault_IsTheTypeNameInCamelCaseWithoutSeparator()
    {
        var (repository, _, _) = Create();

        Assert.Equal("shoppingCart", repository.Category);
        Assert.Equal("shoppingCart-42", repository.StreamNameFor("42"));
        Assert.Equal("shoppingCart", StreamName.GetCategory(repository.StreamNameFor("a-b-c")));
    }

    [Fact]
    public void Category_Configured_IsUsed_AndOneWithADashIsRefused()
    {
        Assert.Equal("cart-7", Create(new AggregateOptions { Category = "cart" }).Repository.StreamNameFor("7"));
        Assert.Throws<ArgumentException>(() => Create(new AggregateOptions { Category = "shopping-cart" }));
        Assert.Throws<ArgumentException>(() => Create(new AggregateOptions { Category = "$cart" }));
    }

    [Fact]
    public void SnapshotEvery_OnAnAggregateWithoutSnapshots_IsRefusedAtConstruction()
    {
        var ex = Assert.Throws<ArgumentException>(() => Create(new AggregateOptions { SnapshotEvery = 10 }));

        Assert.Contains("SnapshotType", ex.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Raise_AppliesThroughWhenAndRecords_UntilCleared()
    {
        var cart = new ShoppingCart();
        cart.Open("1");
        cart.Note("hello");

        Assert.Equal(["opened", "hello"], cart.Log);
        Assert.Equal(2, cart.UncommittedEvents.Count);
        Assert.Equal(0, cart.Version);
        cart.ClearUncommittedEvents();
        Assert.Empty(cart.UncommittedEvents);
    }

    [Fact]
    public async Task Save_StampsEnvelopesFromTheRegistryAndTheClock()
    {
        var (repository, store, _) = Create();
        var cart = new ShoppingCart();
        cart.Open("9");
        cart.Note("n");

        await repository.SaveAsync(cart, new EventMetadata { CorrelationId = "c", Headers = new Dictionary<string, string> { ["traceparent"] = "tp" } });

        var events = new List<RecordedEvent>();
        await foreach (var e in store.ReadStreamAsync("shoppingCart-9"))
        {
            events.Add(e);
        }

        Assert.Equal(["ticket-opened", "ticket-noted"], events.Select(e => e.EventType));
        Assert.All(events, e =>
        {
            Assert.Equal(Now, e.Envelope.Time);
            Assert.Equal(7, e.EventId.Version);
            Assert.Equal("c", e.Envelope.CorrelationId);
            Assert.Equal("tp", e.Envelope.GetHeader("traceparent"));
            Assert.Equal(ContentTypes.Json, e.Envelope.ContentType);
            Assert.Equal("shoppingCart-9", e.Envelope.PartitionKey);
        });
        Assert.Equal(2, cart.Version);
    }

    [Fact]
    public async Task Save_WithoutAnId_ThrowsBeforeWriting()
    {
        var (repository, store, _) = Create();
        var cart = new ShoppingCart();
        cart.Note("orphan");

        await Assert.ThrowsAsync<ArgumentException>(() => repository.SaveAsync(cart));
        Assert.Equal(0, await store.GetLastPositionAsync());
    }

    [Fact]
    public async Task Save_AnUnregisteredEventType_ThrowsAndWritesNothing()
    {
        var (repository, store, _) = Create();
        var cart = new ShoppingCart();
        cart.Open("1");
        cart.RaiseUnregistered();

        await Assert.ThrowsAsync<MessageTypeNotRegisteredException>(() => repository.SaveAsync(cart));

        Assert.Equal(0, await store.GetLastPositionAsync());
        Assert.Equal(2, cart.UncommittedEvents.Count);
    }

    [Fact]
    public async Task Save_WithNothingRaised_OnlyChecksTheVersion()
    {
        var (repository, store, _) = Create();
        var cart = new ShoppingCart();
        cart.Open("1");
        await repository.SaveAsync(cart);
        var loaded = await repository.LoadAsync("1");
        await store.AppendAsync("shoppingCart-1", ExpectedVersion.Any, [new Envelope { MessageId = Guid.CreateVersion7(), MessageType = "ticket-noted", Time = Now, Body = "{\"text\":\"x\"}"u8.ToArray() }]);

        await Assert.ThrowsAsync<ConcurrencyException>(() => repository.SaveAsync(loaded));
        var fresh = await repository.LoadAsync("1");
        Assert.Equal(2, await repository.SaveAsync(fresh));
    }

    [Fact]
    public async Task Load_AStoredEventOfAnUnknownType_Throws()
    {
        var (repository, store, _) = Create();
        await store.AppendAsync("shoppingCart-1", ExpectedVersion.NoStream, [new Envelope { MessageId = Guid.CreateVersion7(), MessageType = "nobody-knows", Time = Now, Body = "{}"u8.ToArray() }]);

        var failure = await Assert.ThrowsAsync<AggregateLoadException>(() => repository.LoadAsync("1"));

        Assert.IsType<UnknownMessageTypeException>(failure.InnerException);
        Assert.Contains("stream 'shoppingCart-1' version 1 (event 'nobody-knows'", failure.Message, StringComparison.Ordinal);
        Assert.True(Herald.Reliability.Retry.RetryPolicy.Default.IsNeverRetried(failure));
    }

    [Fact]
    public async Task Load_AStoredEventThatDoesNotDecodeOrThatWhenRefuses_ThrowsNamingTheStreamAndVersion_ClassifiedByItsCause()
    {
        // The causes alone name neither: a handler's dead letter said "the body of a 'ticket-noted' message could not be
        // decoded", pointing at the handled message instead of the stored event.
        var (repository, store, _) = Create();
        Envelope Noted(string body) => new() { MessageId = Guid.CreateVersion7(), MessageType = "ticket-noted", Time = Now, Body = System.Text.Encoding.UTF8.GetBytes(body) };
        await store.AppendAsync("shoppingCart-2", ExpectedVersion.NoStream, [Noted("""{"text":"fine"}"""), Noted("""{"text":42}""")]);
        await store.AppendAsync("shoppingCart-3", ExpectedVersion.NoStream, [Noted("""{"text":"fine"}"""), Noted("""{"text":"x"}"""), Noted("""{"text":"boom"}""")]);

        var undecodable = await Assert.ThrowsAsync<AggregateLoadException>(() => repository.LoadAsync("2"));
        var refused = await Assert.ThrowsAsync<AggregateLoadException>(() => repository.LoadAsync("3"));

        Assert.IsType<MessageDeserializationException>(undecodable.InnerException);
        Assert.Contains("stream 'shoppingCart-2' version 2 (event 'ticket-noted'", undecodable.Message, StringComparison.Ordinal);
        Assert.True(Herald.Reliability.Retry.RetryPolicy.Default.IsNeverRetried(undecodable));
        Assert.Equal("boom refused", Assert.IsType<InvalidOperationException>(refused.InnerException).Message);
        Assert.Contains("stream 'shoppingCart-3' version 3 (event 'ticket-noted'", refused.Message, StringComparison.Ordinal);
        Assert.EndsWith("InvalidOperationException: boom refused", refused.Message, StringComparison.Ordinal);
        Assert.False(Herald.Reliability.Retry.RetryPolicy.Default.IsNeverRetried(refused));
    }

    [Fact]
    public async Task SaveInAUnitOfWork_OfAStreamStartedAgainAfterADeletion_TakesNoSnapshotThatALoadWouldReplayEventsOnto()
    {
        var store = new InMemoryEventStore();
        var direct = Counters(store, unitOfWork: null);
        var first = new ConformanceCounter();
        first.Start("7");
        first.Increment(100);
        first.Increment(100);
        first.Increment(100);
        await direct.SaveAsync(first);
        await store.DeleteStreamAsync(direct.StreamNameFor("7"), ExpectedVersion.Any);

        // The stream starts again above its deleted versions 1-3: these five events are versions 4-8, though the aggregate
        // loaded as new (version 0). A snapshot claiming version 5 would hold all five, and a load would apply 6-8 again.
        await using (var unitOfWork = new InMemoryUnitOfWork())
        {
            var inUnit = Counters(store, unitOfWork);
            var again = await inUnit.LoadAsync("7");
            for (var i = 0; i < 5; i++)
            {
                again.Increment(1);
            }

            await inUnit.SaveAsync(again);
            await unitOfWork.CommitAsync();
        }

        var loaded = await direct.LoadAsync("7");
        Assert.Equal((5, 8L), (loaded.Total, loaded.Version));
    }

    [Fact]
    public async Task Save_WhenTheSnapshotWriteFails_ReturnsTheVersionOfTheCommittedEvents_AndLogsTheWarning()
    {
        // Only a repository built by hand appends directly, and it had no logger: the failure was swallowed unseen.
        var logs = new Herald.Tests.Reliability.LogCollector();
        using var loggers = LoggerFactory.Create(b => b.AddProvider(logs));
        var store = new InMemoryEventStore();
        var repository = new AggregateRepository<ConformanceCounter>(
            store,
            ConformanceCounter.CreateRegistry(),
            new SystemTextJsonMessageSerializer(),
            new FakeTimeProvider(Now),
            new FailingSnapshotSaves(store),
            new AggregateOptions { Category = "counter", SnapshotEvery = 2 },
            loggers.CreateLogger<AggregateRepository<ConformanceCounter>>());
        var counter = new ConformanceCounter();
        counter.Start("9");
        counter.Increment(1);
        counter.Increment(2);

        // The events are committed before the snapshot is taken: reporting the save as failed would have the caller run
        // the command again on top of them.
        var version = await repository.SaveAsync(counter);

        Assert.Equal((2L, 2L), (version, counter.Version));
        Assert.Empty(counter.UncommittedEvents);
        Assert.Equal(2, await store.GetStreamVersionAsync("counter-9"));
        Assert.Null(await store.LoadSnapshotAsync("counter-9"));
        Assert.Equal(3, (await repository.LoadAsync("9")).Total);
        var warning = Assert.Single(logs.Entries, e => e.EventId == 1121);
        Assert.IsType<TimeoutException>(warning.Exception);
        Assert.Contains("counter-9", warning.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task SaveInAUnitOfWork_WhenTheSnapshotCannotBeTaken_CommitsTheEvents_AndLogsTheWarning()
    {
        // Appending directly, a snapshot that failed was logged and the save went on; in a unit of work (every repository
        // from DI) the same failure threw out of SaveAsync, so the command failed, and failed again on every retry.
        var logs = new Herald.Tests.Reliability.LogCollector();
        using var loggers = LoggerFactory.Create(b => b.AddProvider(logs));
        var store = new InMemoryEventStore();
        long version;
        await using (var unitOfWork = new InMemoryUnitOfWork())
        {
            var repository = Counters(store, unitOfWork, snapshotEvery: 2, loggers.CreateLogger<AggregateRepository<UnserializableCounter>>());
            var counter = new UnserializableCounter();
            counter.Start("11");
            counter.Increment(1);
            counter.Increment(2);

            version = await repository.SaveAsync(counter);
            await unitOfWork.CommitAsync();
        }

        Assert.Equal(2L, version);
        Assert.Equal(2, await store.GetStreamVersionAsync("counter-11"));
        Assert.Null(await store.LoadSnapshotAsync("counter-11"));
        var warning = Assert.Single(logs.Entries, e => e.EventId == 1122);
        Assert.IsType<InvalidOperationException>(warning.Exception);
        Assert.Contains("counter-11", warning.Message, StringComparison.Ordinal);
    }

    // A counter whose CreateSnapshot fails, as one whose state the serializer cannot write would.
    private sealed class UnserializableCounter : Aggregate
    {
        public int Total { get; private set; }

        protected internal override Type? SnapshotType => typeof(CounterState);

        public void Start(string id) => Id = id;

        public void Increment(int amount) => Raise(new CounterIncremented(amount, null));

        protected override void When(object @event) => Total += ((CounterIncremented)@event).Amount;

        protected internal override object CreateSnapshot() => throw new InvalidOperationException("the state holds a cycle");

        protected internal override void RestoreSnapshot(object snapshot) => Total = ((CounterState)snapshot).Total;
    }

    private sealed class FailingSnapshotSaves(ISnapshotStore inner) : ISnapshotStore
    {
        public ValueTask<Snapshot?> LoadSnapshotAsync(string stream, CancellationToken cancellationToken = default) =>
            inner.LoadSnapshotAsync(stream, cancellationToken);

        public ValueTask SaveSnapshotAsync(Snapshot snapshot, CancellationToken cancellationToken = default) =>
            throw new TimeoutException("the snapshot table is locked");

        public ValueTask SaveSnapshotAsync(Snapshot snapshot, IUnitOfWork unitOfWork, CancellationToken cancellationToken = default) =>
            throw new TimeoutException("the snapshot table is locked");
    }

    private static AggregateRepository<ConformanceCounter> Counters(InMemoryEventStore store, IUnitOfWork? unitOfWork) => Counters<ConformanceCounter>(store, unitOfWork, snapshotEvery: 5);

    private static AggregateRepository<TCounter> Counters<TCounter>(
        InMemoryEventStore store, IUnitOfWork? unitOfWork, int snapshotEvery, ILogger<AggregateRepository<TCounter>>? logger = null)
        where TCounter : Aggregate, new() => new(
        store,
        ConformanceCounter.CreateRegistry(),
        new SystemTextJsonMessageSerializer(),
        new FakeTimeProvider(Now),
        unitOfWork,
        store,
        new AggregateOptions { Category = "counter", SnapshotEvery = snapshotEvery },
        logger);
}
