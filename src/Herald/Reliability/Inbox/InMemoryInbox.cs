using Herald.Persistence;
namespace Herald.Reliability.Inbox;

/// <summary>Inbox marks in process memory, expiring on the injected clock. A mark made in a unit of work is removed when it rolls back.</summary>
public sealed class InMemoryInbox : IInbox
{
    private readonly Dictionary<(string Endpoint, Guid MessageId), Mark> _marks = [];
    private readonly Lock _gate = new();
    private readonly TimeProvider _timeProvider;

    /// <summary>Creates the inbox on the given clock.</summary>
    public InMemoryInbox(TimeProvider timeProvider)
    {
        ArgumentNullException.ThrowIfNull(timeProvider);
        _timeProvider = timeProvider;
    }

    /// <inheritdoc />
    public async ValueTask<bool> TryMarkHandledAsync(string endpoint, Guid messageId, TimeSpan window, IUnitOfWork? unitOfWork = null, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(endpoint);
        ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(window, TimeSpan.Zero);
        var key = (endpoint, messageId);
        Mark mark;
        while (true)
        {
            var now = _timeProvider.GetUtcNow();
            Task ended;
            lock (_gate)
            {
                // A pending mark holds until its unit of work ends, however long its handler runs: its window starts at the commit.
                if (_marks.TryGetValue(key, out var existing) && (existing.UnitOfWork is not null || existing.ExpiresAt > now))
                {
                    // A mark whose unit of work is still open may yet roll back: wait for its outcome, as a database's row lock
                    // makes a second transaction wait, instead of acking this copy as a duplicate of an attempt that fails.
                    if (existing.UnitOfWork is null || ReferenceEquals(existing.UnitOfWork, unitOfWork))
                    {
                        return false;
                    }

                    ended = (existing.Ended ??= new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously)).Task;
                }
                else
                {
                    _marks[key] = mark = new Mark(this, key, window, now + window, unitOfWork);
                    break;
                }
            }

            await ended.WaitAsync(cancellationToken).ConfigureAwait(false);
        }

        if (unitOfWork is not null)
        {
            try
            {
                unitOfWork.OnCommitted(mark.CommittedAsync);
                unitOfWork.OnRolledBack(mark.RolledBackAsync);
            }
            catch
            {
                // A unit of work that can no longer take callbacks would never end the mark, and a second mark would wait on it.
                await mark.RolledBackAsync(CancellationToken.None).ConfigureAwait(false);
                throw;
            }
        }

        return true;
    }

    /// <inheritdoc />
    public ValueTask<bool> IsHandledAsync(string endpoint, Guid messageId, CancellationToken cancellationToken = default)
    {
        var now = _timeProvider.GetUtcNow();
        lock (_gate)
        {
            return ValueTask.FromResult(_marks.TryGetValue((endpoint, messageId), out var mark) && mark.ExpiresAt > now);
        }
    }

    /// <inheritdoc />
    public ValueTask<int> DeleteExpiredAsync(int maxCount, CancellationToken cancellationToken = default)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(maxCount, 1);
        var now = _timeProvider.GetUtcNow();
        lock (_gate)
        {
            var expired = _marks.Where(m => m.Value.UnitOfWork is null && m.Value.ExpiresAt <= now).Take(maxCount).Select(m => m.Key).ToList();
            foreach (var key in expired)
            {
                _marks.Remove(key);
            }

            return ValueTask.FromResult(expired.Count);
        }
    }

    /// <summary>
    /// A mark; while its unit of work is open, <see cref="UnitOfWork"/> holds it and a second mark waits on <see cref="Ended"/>.
    /// Its window starts when it is committed (at once without a unit of work), as a database writes it at its commit.
    /// </summary>
    private sealed class Mark(InMemoryInbox inbox, (string Endpoint, Guid MessageId) key, TimeSpan window, DateTimeOffset expiresAt, IUnitOfWork? unitOfWork)
    {
        public DateTimeOffset ExpiresAt { get; private set; } = expiresAt;

        public IUnitOfWork? UnitOfWork { get; private set; } = unitOfWork;

        // Created only by a second mark that found this one pending, so the uncontended path allocates no signal.
        public TaskCompletionSource? Ended { get; set; }

        public ValueTask CommittedAsync(CancellationToken cancellationToken) => End(remove: false);

        public ValueTask RolledBackAsync(CancellationToken cancellationToken) => End(remove: true);

        private ValueTask End(bool remove)
        {
            TaskCompletionSource? ended;
            lock (inbox._gate)
            {
                // Remove only our own mark: after it expired, someone else may hold a newer one.
                if (remove && inbox._marks.TryGetValue(key, out var current) && ReferenceEquals(current, this))
                {
                    inbox._marks.Remove(key);
                }

                if (!remove)
                {
                    ExpiresAt = inbox._timeProvider.GetUtcNow() + window;
                }

                UnitOfWork = null;
                (ended, Ended) = (Ended, null);
            }

            ended?.TrySetResult();
            return ValueTask.CompletedTask;
        }
    }
}
