using Herald.EventSourcing;
using Herald.Internal;
using Herald.Messages;
using Herald.Postgres.Internal;

namespace Herald.Postgres.EventSourcing;

/// <summary>
/// One caller's append, waiting for the coordinator. Its column arrays are built on the caller's thread when it is
/// queued, so the writer only concatenates them; an event PostgreSQL cannot store is refused then, before it joins a group
/// (a bare 22021 would fail the group's transaction naming neither the stream nor the field). Other engines store U+0000,
/// but an event is kept exactly or not at all, never altered.
/// </summary>
internal sealed class PendingAppend : IGroupCommitItem
{
    public PendingAppend(string stream, ExpectedVersion expected, IReadOnlyList<Envelope> events, CancellationToken cancellationToken)
    {
        Stream = stream;
        Category = StreamName.GetCategory(stream);
        Expected = expected;
        CancellationToken = cancellationToken;
        Columns = new EnvelopeArrays(events.Count);
        for (var i = 0; i < events.Count; i++)
        {
            Columns.Set(i, events[i]);
            if (Columns.HoldsNul(i))
            {
                NulText.ThrowIfHeld(events[i], nameof(events), (events[i].MessageId, stream), static s => $"event {s.MessageId} of the append to '{s.stream}'");
            }
        }
    }

    public string Stream { get; }

    public string Category { get; }

    public ExpectedVersion Expected { get; }

    public int Count => Columns.Count;

    public CancellationToken CancellationToken { get; }

    /// <summary>Events, counted against the coordinator's per-commit budget.</summary>
    public long Weight => Count;

    public TaskCompletionSource<AppendResult> Completion { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

    /// <summary>The events' envelope columns.</summary>
    public EnvelopeArrays Columns { get; }

    public void Cancel() => Completion.TrySetCanceled(CancellationToken);

    public void Fail(Exception exception) => Completion.TrySetException(exception);
}
