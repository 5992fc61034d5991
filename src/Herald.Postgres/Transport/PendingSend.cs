using Herald.Internal;
using Herald.Messages;

namespace Herald.Postgres.Transport;

/// <summary>One caller's send, waiting for the <see cref="SendCoordinator"/>; it completes once its row has committed.</summary>
internal sealed class PendingSend(string queue, Envelope envelope, string? correlationId, DateTimeOffset enqueuedAt, DateTimeOffset visibleAt, CancellationToken cancellationToken)
    : TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously), IGroupCommitItem
{
    public string Queue { get; } = queue;

    public Envelope Envelope { get; } = envelope;

    /// <summary>The envelope's correlation id, read once (an own-id correlation is made into text on each read).</summary>
    public string? CorrelationId { get; } = correlationId;

    public DateTimeOffset EnqueuedAt { get; } = enqueuedAt;

    public DateTimeOffset VisibleAt { get; } = visibleAt;

    public CancellationToken CancellationToken { get; } = cancellationToken;

    /// <summary>Bytes the row carries beyond its fixed columns, for the coordinator's per-commit budget.</summary>
    public long Weight => Envelope.Body.Length;

    public void Cancel() => TrySetCanceled(CancellationToken);

    public void Fail(Exception exception) => TrySetException(exception);
}
