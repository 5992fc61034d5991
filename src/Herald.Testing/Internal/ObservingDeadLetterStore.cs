using Herald.Persistence;
using Herald.Reliability.DeadLetters;

namespace Herald.Testing.Internal;

/// <summary>The host's dead-letter store, reporting every dead letter that was stored (by the pipeline, the outbox or a drain).</summary>
internal sealed class ObservingDeadLetterStore(IDeadLetterStore inner, HarnessRecorder recorder) : IDeadLetterStore
{
    public async ValueTask<bool> AddAsync(DeadLetter deadLetter, CancellationToken cancellationToken = default)
    {
        var added = await inner.AddAsync(deadLetter, cancellationToken).ConfigureAwait(false);
        Stored(deadLetter);
        return added;
    }

    public ValueTask AddAsync(DeadLetter deadLetter, IUnitOfWork unitOfWork, Action<bool>? added = null, CancellationToken cancellationToken = default) =>
        inner.AddAsync(
            deadLetter,
            unitOfWork,
            stored =>
            {
                Stored(deadLetter);
                added?.Invoke(stored);
            },
            cancellationToken);

    public ValueTask<DeadLetter?> GetAsync(Guid id, CancellationToken cancellationToken = default) => inner.GetAsync(id, cancellationToken);

    public ValueTask<IReadOnlyList<DeadLetter>> ListAsync(DeadLetterQuery query, CancellationToken cancellationToken = default) => inner.ListAsync(query, cancellationToken);

    public ValueTask<long> CountAsync(DeadLetterQuery query, CancellationToken cancellationToken = default) => inner.CountAsync(query, cancellationToken);

    public ValueTask<bool> DeleteAsync(Guid id, CancellationToken cancellationToken = default) => inner.DeleteAsync(id, cancellationToken);

    public ValueTask DeleteAsync(Guid id, IUnitOfWork unitOfWork, CancellationToken cancellationToken = default) => inner.DeleteAsync(id, unitOfWork, cancellationToken);

    public ValueTask<int> DeleteManyAsync(DeadLetterQuery query, CancellationToken cancellationToken = default) => inner.DeleteManyAsync(query, cancellationToken);

    public ValueTask<bool> RecordRetryFailureAsync(Guid id, string error, DateTimeOffset time, CancellationToken cancellationToken = default) =>
        inner.RecordRetryFailureAsync(id, error, time, cancellationToken);

    private void Stored(DeadLetter deadLetter)
    {
        // The pipeline stores the dead letter before it settles the delivery: the delivery's outcome reads it.
        if (DeliveryObservation.Current is { } delivery && delivery.Envelope.MessageId == deadLetter.Envelope.MessageId)
        {
            delivery.DeadLetter = deadLetter;
        }

        recorder.RecordDeadLetter(deadLetter);
    }
}
