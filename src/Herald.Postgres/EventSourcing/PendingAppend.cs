using Herald.EventSourcing;
using Herald.Internal;
using Herald.Messages;

namespace Herald.Postgres.EventSourcing;

/// <summary>
/// One caller's append, waiting for the coordinator. Its column arrays are built on the caller's thread when it is
/// queued, so the writer loop only concatenates them.
/// </summary>
internal sealed class PendingAppend : IGroupCommitItem
{
    public PendingAppend(string stream, ExpectedVersion expected, IReadOnlyList<Envelope> events, CancellationToken cancellationToken)
    {
        Stream = stream;
        Category = StreamName.GetCategory(stream);
        Expected = expected;
        CancellationToken = cancellationToken;
        var count = events.Count;
        Ids = new Guid[count];
        Types = new string[count];
        SchemaVersions = new int[count];
        Times = new DateTime[count];
        CorrelationIds = new string?[count];
        CausationIds = new string?[count];
        UserIds = new string?[count];
        PartitionKeys = new string?[count];
        ContentTypes = new string[count];
        Headers = new string?[count];
        Bodies = new byte[count][];
        for (var i = 0; i < count; i++)
        {
            var envelope = events[i];
            Ids[i] = envelope.MessageId;
            Types[i] = envelope.MessageType;
            SchemaVersions[i] = envelope.SchemaVersion;
            Times[i] = envelope.Time.UtcDateTime;
            CorrelationIds[i] = envelope.CorrelationId;
            CausationIds[i] = envelope.CausationId;
            UserIds[i] = envelope.UserId;
            PartitionKeys[i] = envelope.PartitionKey;
            ContentTypes[i] = envelope.ContentType;
            Headers[i] = EventRows.FormatHeaders(envelope.Headers);
            Bodies[i] = EventRows.BodyArray(envelope.Body);
        }
    }

    public string Stream { get; }

    public string Category { get; }

    public ExpectedVersion Expected { get; }

    public int Count => Ids.Length;

    public CancellationToken CancellationToken { get; }

    /// <summary>Events, counted against the coordinator's per-commit budget.</summary>
    public long Weight => Count;

    public TaskCompletionSource<AppendResult> Completion { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public void Cancel() => Completion.TrySetCanceled(CancellationToken);

    public void Fail(Exception exception) => Completion.TrySetException(exception);

    public Guid[] Ids { get; }

    public string[] Types { get; }

    public int[] SchemaVersions { get; }

    public DateTime[] Times { get; }

    public string?[] CorrelationIds { get; }

    public string?[] CausationIds { get; }

    public string?[] UserIds { get; }

    public string?[] PartitionKeys { get; }

    public string[] ContentTypes { get; }

    public string?[] Headers { get; }

    public byte[][] Bodies { get; }
}
