using System.Text;
using Herald.EventSourcing;
using Herald.EventSourcing.Subscriptions;
using Herald.Messages;
using Herald.Persistence;
using Xunit;

namespace Herald.Conformance.EventSourcing;

/// <summary>
/// The behaviour every <see cref="IEventStore"/> (with its <see cref="ICheckpointStore"/> and <see cref="ISnapshotStore"/>)
/// must show. An adapter's test project derives from it and supplies the store. Every test uses its own stream names and
/// categories (random), and reads of <c>$all</c> start from the head at the test's start, so the suite can run against a
/// shared database.
/// </summary>
public abstract partial class EventStoreConformance : IAsyncLifetime
{
    /// <summary>A fixed envelope time, whole milliseconds, so every engine stores it exactly.</summary>
    protected static readonly DateTimeOffset EventTime = new(2026, 3, 4, 5, 6, 7, 890, TimeSpan.Zero);

    private static long _bodyCounter;
    private IEventStore? _store;

    /// <summary>The store under test, created by <see cref="CreateStoreAsync"/> before each test.</summary>
    protected IEventStore Store => _store ?? throw new InvalidOperationException("The store is created in InitializeAsync.");

    /// <summary>The checkpoint store under test.</summary>
    protected ICheckpointStore Checkpoints => CheckpointStoreFor(Store);

    /// <summary>The snapshot store under test.</summary>
    protected ISnapshotStore Snapshots => SnapshotStoreFor(Store);

    /// <summary>The body limit the store was configured with (the oversized-event test sends one byte more).</summary>
    protected virtual int MaxEventBytes => AppendValidation.DefaultMaxEventBytes;

    /// <summary>How long a test waits for a subscription or signal before failing.</summary>
    protected virtual TimeSpan WaitTimeout => TimeSpan.FromSeconds(20);

    /// <summary>
    /// Creates a store for one test (a fresh or shared database; tests use unique names) that stamps appends with
    /// <paramref name="timeProvider"/>; <see cref="Store"/> is one on the system clock.
    /// </summary>
    protected abstract Task<IEventStore> CreateStoreAsync(TimeProvider timeProvider);

    /// <summary>Begins a unit of work of the engine of <paramref name="store"/> (one created by <see cref="CreateStoreAsync"/>).</summary>
    protected abstract IUnitOfWork BeginUnitOfWork(IEventStore store);

    /// <summary>The checkpoint store that goes with the store; by default the store itself.</summary>
    protected virtual ICheckpointStore CheckpointStoreFor(IEventStore store) =>
        store as ICheckpointStore ?? throw new InvalidOperationException($"{store.GetType().Name} is no ICheckpointStore; override CheckpointStoreFor.");

    /// <summary>The snapshot store that goes with the store; by default the store itself.</summary>
    protected virtual ISnapshotStore SnapshotStoreFor(IEventStore store) =>
        store as ISnapshotStore ?? throw new InvalidOperationException($"{store.GetType().Name} is no ISnapshotStore; override SnapshotStoreFor.");

    /// <summary>
    /// Sets the stored headers of the event at <paramref name="position"/> as another tool might (<paramref name="json"/>,
    /// or none when null), writing the column directly; false when the engine keeps no such column (memory).
    /// </summary>
    protected virtual Task<bool> OverwriteHeadersColumnAsync(long position, string? json) => Task.FromResult(false);

    /// <summary>Releases the store after a test; by default disposes it when it is disposable.</summary>
    protected virtual async ValueTask DisposeStoreAsync(IEventStore store)
    {
        switch (store)
        {
            case IAsyncDisposable asyncDisposable:
                await asyncDisposable.DisposeAsync();
                break;
            case IDisposable disposable:
                disposable.Dispose();
                break;
        }
    }

    /// <inheritdoc />
    public async Task InitializeAsync() => _store = await CreateStoreAsync(TimeProvider.System);

    /// <inheritdoc />
    public async Task DisposeAsync()
    {
        if (_store is not null)
        {
            await DisposeStoreAsync(_store);
        }
    }

    /// <summary>A fresh category (letters and digits only).</summary>
    protected static string NewCategory() => "c" + Guid.NewGuid().ToString("N")[..24];

    /// <summary>A fresh stream name, in a fresh category unless one is given.</summary>
    protected static string NewStream(string? category = null) => $"{category ?? NewCategory()}-{Guid.NewGuid():N}";

    /// <summary>A new event with a unique JSON body unless one is given.</summary>
    protected static Envelope NewEvent(string type = "thing-happened", string? json = null, int schemaVersion = 1) => new()
    {
        MessageId = Guid.CreateVersion7(),
        MessageType = type,
        SchemaVersion = schemaVersion,
        Time = EventTime,
        Body = Encoding.UTF8.GetBytes(json ?? $"{{\"n\":{Interlocked.Increment(ref _bodyCounter)}}}"),
    };

    /// <summary>The event with <paramref name="text"/> in the attribute an append's refusal names <paramref name="field"/> (a header's name or value included).</summary>
    protected static Envelope WithText(Envelope envelope, string field, string text) => field switch
    {
        "message type" => envelope with { MessageType = text },
        "correlation id" => envelope with { CorrelationId = text },
        "causation id" => envelope with { CausationId = text },
        "user id" => envelope with { UserId = text },
        "partition key" => envelope with { PartitionKey = text },
        "content type" => envelope with { ContentType = text },
        "header name" => envelope with { Headers = new Dictionary<string, string> { [text] = "x" } },
        "header value" => envelope with { Headers = new Dictionary<string, string> { ["trace"] = text } },
        _ => throw new ArgumentOutOfRangeException(nameof(field), field, "Not an attribute an append names."),
    };

    /// <summary>Several new events of one type.</summary>
    protected static Envelope[] NewEvents(int count, string type = "thing-happened") =>
        Enumerable.Range(0, count).Select(_ => NewEvent(type)).ToArray();

    /// <summary>Reads a stream into a list.</summary>
    protected async Task<List<RecordedEvent>> ReadStreamAsync(IEventStore store, string stream, ReadDirection direction = ReadDirection.Forward, long fromVersion = 1, int maxCount = int.MaxValue)
    {
        var events = new List<RecordedEvent>();
        await foreach (var recorded in store.ReadStreamAsync(stream, direction, fromVersion, maxCount))
        {
            events.Add(recorded);
        }

        return events;
    }

    /// <summary>Reads a stream of the store under test into a list.</summary>
    protected Task<List<RecordedEvent>> ReadStreamAsync(string stream, ReadDirection direction = ReadDirection.Forward, long fromVersion = 1, int maxCount = int.MaxValue) =>
        ReadStreamAsync(Store, stream, direction, fromVersion, maxCount);

    /// <summary>Reads the global log into a list.</summary>
    protected static async Task<List<RecordedEvent>> ReadAllAsync(IEventStore store, long fromPositionExclusive, EventFilter? filter = null, int maxCount = int.MaxValue)
    {
        var events = new List<RecordedEvent>();
        await foreach (var recorded in store.ReadAllAsync(fromPositionExclusive, filter, maxCount))
        {
            events.Add(recorded);
        }

        return events;
    }

    /// <summary>Reads the global log of the store under test into a list.</summary>
    protected Task<List<RecordedEvent>> ReadAllAsync(long fromPositionExclusive, EventFilter? filter = null, int maxCount = int.MaxValue) =>
        ReadAllAsync(Store, fromPositionExclusive, filter, maxCount);

    /// <summary>Awaits a task with <see cref="WaitTimeout"/>, failing the test with <paramref name="what"/> when it runs out.</summary>
    protected async Task WithinTimeoutAsync(Task task, string what)
    {
        try
        {
            await task.WaitAsync(WaitTimeout);
        }
        catch (TimeoutException)
        {
            Assert.Fail($"Timed out after {WaitTimeout.TotalSeconds:0} s waiting for {what}.");
        }
    }

    /// <summary>Waits until the subscription's position reaches <paramref name="position"/>, or fails the test.</summary>
    protected Task ReachAsync(EventSubscription subscription, long position) =>
        WithinTimeoutAsync(subscription.WaitForPositionAsync(position), $"subscription '{subscription.SubscriptionId}' to reach position {position} (it is at {subscription.Position})");

    /// <summary>Polls a condition until it holds, or fails the test after <see cref="WaitTimeout"/>.</summary>
    protected Task WaitUntilAsync(Func<bool> condition, string what) => Eventually.UntilAsync(condition, what, WaitTimeout);

    /// <summary>Asserts that an append is refused with a concurrency conflict.</summary>
    protected static Task<ConcurrencyException> AssertConflictAsync(Func<Task> append) => Assert.ThrowsAsync<ConcurrencyException>(append);

    private static void AssertSameEnvelope(Envelope expected, Envelope actual)
    {
        Assert.Equal(expected.MessageId, actual.MessageId);
        Assert.Equal(expected.MessageType, actual.MessageType);
        Assert.Equal(expected.SchemaVersion, actual.SchemaVersion);
        Assert.Equal(expected.Time, actual.Time);
        Assert.Equal(expected.CorrelationId, actual.CorrelationId);
        Assert.Equal(expected.CausationId, actual.CausationId);
        Assert.Equal(expected.UserId, actual.UserId);
        Assert.Equal(expected.PartitionKey, actual.PartitionKey);
        Assert.Equal(expected.ContentType, actual.ContentType);
        Assert.Equal(expected.Headers.OrderBy(h => h.Key, StringComparer.Ordinal), actual.Headers.OrderBy(h => h.Key, StringComparer.Ordinal));
        Assert.Equal(expected.Body.ToArray(), actual.Body.ToArray());
    }
}
