using System.Runtime.CompilerServices;
using Herald.EventSourcing;
using Herald.Messages;

namespace Herald.Tests.EventSourcing;

/// <summary>
/// An event store whose first <see cref="FailuresLeft"/> reads of the log throw, as a restarting database does, and whose
/// event at <see cref="UnreadableAt"/> reads as a row another tool spoiled does (an <see cref="UnreadableEventException"/>).
/// </summary>
internal sealed class FaultyReadsStore(IEventStore inner) : DelegatingEventStore(inner)
{
#pragma warning disable SA1401, CA1051 // Fields, so tests count down with Interlocked.
    public int FailuresLeft;

    public long UnreadableAt = -1;
#pragma warning restore SA1401, CA1051

    public override IAsyncEnumerable<RecordedEvent> ReadAllAsync(long fromPositionExclusive = 0, EventFilter? filter = null, int maxCount = int.MaxValue, CancellationToken cancellationToken = default) =>
        Interlocked.Decrement(ref FailuresLeft) >= 0
            ? throw new TimeoutException("the database is restarting")
            : ReadAllSpoiledAsync(fromPositionExclusive, filter, maxCount, cancellationToken);

    private async IAsyncEnumerable<RecordedEvent> ReadAllSpoiledAsync(long fromPositionExclusive, EventFilter? filter, int maxCount, [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        await foreach (var recorded in base.ReadAllAsync(fromPositionExclusive, filter, maxCount, cancellationToken).ConfigureAwait(false))
        {
            if (recorded.Position == Volatile.Read(ref UnreadableAt))
            {
                // What a SQL store salvages of a row whose headers column no longer parses: all but the headers.
                throw new UnreadableEventException(recorded.Position, recorded.Stream, recorded.Envelope with { Headers = new Dictionary<string, string>() }, new FormatException("the headers column holds a number"));
            }

            yield return recorded;
        }
    }
}
