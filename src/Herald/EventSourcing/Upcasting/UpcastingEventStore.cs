using Herald.Messages;
using Herald.Persistence;

namespace Herald.EventSourcing.Upcasting;

/// <summary>
/// Wraps any event store so every read (stream, <c>$all</c>, and so subscriptions and aggregate loads) returns events
/// migrated to their newest schema version and current type name; a type filter of <c>$all</c> selects the types it names
/// under their former names too. Appends and everything else pass through unchanged.
/// </summary>
internal sealed class UpcastingEventStore : IEventStore
{
    private readonly EventUpcasterRegistry _upcasters;

    /// <summary>Wraps <paramref name="inner"/>, upcasting its reads with <paramref name="upcasters"/>.</summary>
    public UpcastingEventStore(IEventStore inner, EventUpcasterRegistry upcasters)
    {
        ArgumentNullException.ThrowIfNull(inner);
        ArgumentNullException.ThrowIfNull(upcasters);
        Inner = inner;
        _upcasters = upcasters;
    }

    /// <summary>The wrapped store.</summary>
    public IEventStore Inner { get; }

    /// <summary>The store under every upcasting layer of <paramref name="store"/> (itself when it has none).</summary>
    public static IEventStore Unwrap(IEventStore store)
    {
        while (store is UpcastingEventStore upcasting)
        {
            store = upcasting.Inner;
        }

        return store;
    }

    /// <summary>
    /// An event read from the store under every upcasting layer (<see cref="Unwrap"/>), migrated through each layer, the
    /// innermost first, as this store's own reads migrate it.
    /// </summary>
    public RecordedEvent Upcast(RecordedEvent stored) => _upcasters.Upcast(Inner is UpcastingEventStore inner ? inner.Upcast(stored) : stored);

    /// <inheritdoc />
    public ValueTask<AppendResult> AppendAsync(string stream, ExpectedVersion expectedVersion, IReadOnlyList<Envelope> events, CancellationToken cancellationToken = default) =>
        Inner.AppendAsync(stream, expectedVersion, events, cancellationToken);

    /// <inheritdoc />
    public ValueTask<long?> AppendAsync(string stream, ExpectedVersion expectedVersion, IReadOnlyList<Envelope> events, IUnitOfWork unitOfWork, CancellationToken cancellationToken = default) =>
        Inner.AppendAsync(stream, expectedVersion, events, unitOfWork, cancellationToken);

    /// <inheritdoc />
    public IAsyncEnumerable<RecordedEvent> ReadStreamAsync(string stream, ReadDirection direction = ReadDirection.Forward, long fromVersion = 1, int maxCount = int.MaxValue, CancellationToken cancellationToken = default) =>
        Inner.ReadStreamAsync(stream, direction, fromVersion, maxCount, cancellationToken).Select(_upcasters.Upcast);

    /// <inheritdoc />
    public IAsyncEnumerable<RecordedEvent> ReadAllAsync(long fromPositionExclusive = 0, EventFilter? filter = null, int maxCount = int.MaxValue, CancellationToken cancellationToken = default) =>
        Inner.ReadAllAsync(fromPositionExclusive, _upcasters.Widen(filter), maxCount, cancellationToken).Select(_upcasters.Upcast);

    /// <inheritdoc />
    public ValueTask<long> GetLastPositionAsync(CancellationToken cancellationToken = default) => Inner.GetLastPositionAsync(cancellationToken);

    /// <inheritdoc />
    public ValueTask<long> GetStreamVersionAsync(string stream, CancellationToken cancellationToken = default) => Inner.GetStreamVersionAsync(stream, cancellationToken);

    /// <inheritdoc />
    public ValueTask DeleteStreamAsync(string stream, ExpectedVersion expectedVersion, CancellationToken cancellationToken = default) =>
        Inner.DeleteStreamAsync(stream, expectedVersion, cancellationToken);

    /// <inheritdoc />
    public ValueTask WaitForEventsAsync(long afterPosition, CancellationToken cancellationToken = default) => Inner.WaitForEventsAsync(afterPosition, cancellationToken);
}
