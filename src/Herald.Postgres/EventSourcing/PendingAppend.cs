using Herald.EventSourcing;
using Herald.Internal;
using Herald.Messages;
using Herald.Postgres.Internal;

namespace Herald.Postgres.EventSourcing;

/// <summary>
/// One caller's append, waiting for the coordinator. Its column arrays are built on the caller's thread when it is
/// queued, so the writer only concatenates them.
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
