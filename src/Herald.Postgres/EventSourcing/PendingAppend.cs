using Herald.EventSourcing;
using Herald.Internal;
using Herald.Messages;
using Herald.Postgres.Internal;

namespace Herald.Postgres.EventSourcing;

/// <summary>
/// One caller's append, waiting for the coordinator. Its events' columns are read on the caller's thread when it is
/// queued (one row each, in one array), so the writer only puts them into its group's arrays; an event PostgreSQL cannot store is refused then, before it joins a group
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
        var rows = new EnvelopeRow[events.Count];
        long bytes = 0;
        for (var i = 0; i < rows.Length; i++)
        {
            var row = rows[i] = EnvelopeRow.Of(events[i], events[i].CorrelationId);
            if (row.HoldsNul)
            {
                NulText.ThrowIfHeld(events[i], nameof(events), (events[i].MessageId, stream), static s => $"event {s.MessageId} of the append to '{s.stream}'");
            }

            bytes += StatementBytes(row);
        }

        Rows = rows;

        // PostgreSQL refuses a protocol message of 1 GB or more by closing the connection, which failed the append's whole
        // group with a bare I/O error; an append that can never fit is refused here instead.
        if (bytes > MaxBytes)
        {
            throw new ArgumentException(
                $"The append to '{stream}' holds about {bytes} bytes of events; one append may hold at most {MaxBytes} (PostgreSQL takes less than 1 GB in one statement). Nothing was written.",
                nameof(events));
        }

        Bytes = bytes;
    }

    /// <summary>The most bytes one append may carry (an upper bound of its events' columns), well below PostgreSQL's 1 GB message limit.</summary>
    public const long MaxBytes = 960L * 1024 * 1024;

    // The fixed-size columns of an event and the length word of each of its array elements.
    private const int FixedBytesPerEvent = 128;

    /// <summary>About how many bytes the append's events take in the append statement (an upper bound for ordinary events).</summary>
    public long Bytes { get; }

    public string Stream { get; }

    public string Category { get; }

    public ExpectedVersion Expected { get; }

    public int Count => Rows.Length;

    public CancellationToken CancellationToken { get; }

    /// <summary>Events, counted against the coordinator's per-commit budget.</summary>
    public long Weight => Count;

    public TaskCompletionSource<AppendResult> Completion { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

    /// <summary>The events' envelope columns, a row per event.</summary>
    public EnvelopeRow[] Rows { get; }

    // An upper bound of what an event takes in the append statement: its body, and at most 3 UTF-8 bytes per UTF-16 unit of text.
    private static long StatementBytes(in EnvelopeRow row) => row.Body.Length + FixedBytesPerEvent + 3L * row.TextLength;

    public void Cancel() => Completion.TrySetCanceled(CancellationToken);

    public void Fail(Exception exception) => Completion.TrySetException(exception);
}
