using Herald.Persistence;
using Herald.Reliability.DeadLetters;

namespace Herald.Conformance.Reliability;

/// <summary>
/// An in-memory dead-letter store whose writes fail on demand, as an unreachable database's would: the first
/// <c>failures</c> writes, and every write while <see cref="Failing"/> is set; and, for good, each dead letter
/// <see cref="Refuses"/> picks (one the store rejects for reasons that will not pass). Reads always work.
/// </summary>
public sealed class FaultyDeadLetterStore : IDeadLetterStore
{
    private readonly InMemoryDeadLetterStore _inner = new();
    private int _failuresLeft;
    private int _refused;
    private int _answersToLose;
    private volatile bool _failing;

    /// <summary>Creates the store failing its first <paramref name="failures"/> writes.</summary>
    public FaultyDeadLetterStore(int failures = 0) => _failuresLeft = failures;

    /// <summary>While true, every write throws.</summary>
    public bool Failing
    {
        get => _failing;
        set => _failing = value;
    }

    /// <summary>When set, every write of a dead letter it returns true for throws, whatever <see cref="Failing"/> says.</summary>
    public Func<DeadLetter, bool>? Refuses { get; set; }

    /// <summary>
    /// How many of the next writes are stored and then throw, as when the database committed but its answer was lost (or
    /// the caller stopped before acting on it): the caller cannot tell them from refusals and writes them again.
    /// </summary>
    public int AnswersToLose
    {
        get => Volatile.Read(ref _answersToLose);
        set => Volatile.Write(ref _answersToLose, value);
    }

    /// <summary>How many writes were refused so far.</summary>
    public int Refused => Volatile.Read(ref _refused);

    /// <inheritdoc />
    public async ValueTask<bool> AddAsync(DeadLetter deadLetter, CancellationToken cancellationToken = default)
    {
        ThrowIfRefused(deadLetter);
        var added = await _inner.AddAsync(deadLetter, cancellationToken);
        if (Interlocked.Decrement(ref _answersToLose) >= 0)
        {
            Interlocked.Increment(ref _refused);
            throw new TimeoutException($"the dead-letter database stored dead letter {deadLetter.Id} but its answer was lost");
        }

        return added;
    }

    /// <inheritdoc />
    public ValueTask AddAsync(DeadLetter deadLetter, IUnitOfWork unitOfWork, Action<bool>? added = null, CancellationToken cancellationToken = default)
    {
        ThrowIfRefused(deadLetter);

        return _inner.AddAsync(deadLetter, unitOfWork, added, cancellationToken);
    }

    private void ThrowIfRefused(DeadLetter deadLetter)
    {
        if (Refuses?.Invoke(deadLetter) == true)
        {
            Interlocked.Increment(ref _refused);
            throw new InvalidOperationException($"the dead-letter database rejects dead letter {deadLetter.Id}");
        }

        if (_failing || Interlocked.Decrement(ref _failuresLeft) >= 0)
        {
            Interlocked.Increment(ref _refused);
            throw new InvalidOperationException("the dead-letter database is unreachable");
        }
    }

    /// <inheritdoc />
    public ValueTask<DeadLetter?> GetAsync(Guid id, CancellationToken cancellationToken = default) => _inner.GetAsync(id, cancellationToken);

    /// <inheritdoc />
    public ValueTask<IReadOnlyList<DeadLetter>> ListAsync(DeadLetterQuery query, CancellationToken cancellationToken = default) => _inner.ListAsync(query, cancellationToken);

    /// <inheritdoc />
    public ValueTask<long> CountAsync(DeadLetterQuery query, CancellationToken cancellationToken = default) => _inner.CountAsync(query, cancellationToken);

    /// <inheritdoc />
    public ValueTask<bool> DeleteAsync(Guid id, CancellationToken cancellationToken = default) => _inner.DeleteAsync(id, cancellationToken);

    /// <inheritdoc />
    public ValueTask DeleteAsync(Guid id, IUnitOfWork unitOfWork, CancellationToken cancellationToken = default) => _inner.DeleteAsync(id, unitOfWork, cancellationToken);

    /// <inheritdoc />
    public ValueTask<int> DeleteManyAsync(DeadLetterQuery query, CancellationToken cancellationToken = default) => _inner.DeleteManyAsync(query, cancellationToken);

    /// <inheritdoc />
    public ValueTask<bool> RecordRetryFailureAsync(Guid id, string error, DateTimeOffset time, CancellationToken cancellationToken = default) =>
        _inner.RecordRetryFailureAsync(id, error, time, cancellationToken);
}
