using Herald.EventSourcing;
using Herald.Messages;
using Herald.Persistence;

namespace Herald.Tests.EventSourcing;

/// <summary>An event store passing every call to <paramref name="inner"/>; a test overrides the calls it makes fail.</summary>
internal abstract class DelegatingEventStore(IEventStore inner) : IEventStore
{
    public virtual ValueTask<AppendResult> AppendAsync(string stream, ExpectedVersion expectedVersion, IReadOnlyList<Envelope> events, CancellationToken cancellationToken = default) =>
        inner.AppendAsync(stream, expectedVersion, events, cancellationToken);

    public virtual ValueTask<long?> AppendAsync(string stream, ExpectedVersion expectedVersion, IReadOnlyList<Envelope> events, IUnitOfWork unitOfWork, CancellationToken cancellationToken = default) =>
        inner.AppendAsync(stream, expectedVersion, events, unitOfWork, cancellationToken);

    public virtual IAsyncEnumerable<RecordedEvent> ReadStreamAsync(string stream, ReadDirection direction = ReadDirection.Forward, long fromVersion = 1, int maxCount = int.MaxValue, CancellationToken cancellationToken = default) =>
        inner.ReadStreamAsync(stream, direction, fromVersion, maxCount, cancellationToken);

    public virtual IAsyncEnumerable<RecordedEvent> ReadAllAsync(long fromPositionExclusive = 0, EventFilter? filter = null, int maxCount = int.MaxValue, CancellationToken cancellationToken = default) =>
        inner.ReadAllAsync(fromPositionExclusive, filter, maxCount, cancellationToken);

    public virtual ValueTask<long> GetLastPositionAsync(CancellationToken cancellationToken = default) => inner.GetLastPositionAsync(cancellationToken);

    public virtual ValueTask<long> GetStreamVersionAsync(string stream, CancellationToken cancellationToken = default) => inner.GetStreamVersionAsync(stream, cancellationToken);

    public virtual ValueTask DeleteStreamAsync(string stream, ExpectedVersion expectedVersion, CancellationToken cancellationToken = default) =>
        inner.DeleteStreamAsync(stream, expectedVersion, cancellationToken);

    public virtual ValueTask WaitForEventsAsync(long afterPosition, CancellationToken cancellationToken = default) => inner.WaitForEventsAsync(afterPosition, cancellationToken);
}
