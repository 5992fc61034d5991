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
    public ValueTask<bool> TryMarkHandledAsync(string endpoint, Guid messageId, TimeSpan window, IUnitOfWork? unitOfWork = null, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(endpoint);
        ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(window, TimeSpan.Zero);
        var key = (endpoint, messageId);
        var now = _timeProvider.GetUtcNow();
        Mark mark;
        lock (_gate)
        {
            if (_marks.TryGetValue(key, out var existing) && existing.ExpiresAt > now)
            {
                return ValueTask.FromResult(false);
            }

            _marks[key] = mark = new Mark(now + window);
        }

        unitOfWork?.OnRolledBack(_ =>
        {
            lock (_gate)
            {
                // Remove only our own mark: after it expired, someone else may hold a newer one.
                if (_marks.TryGetValue(key, out var current) && ReferenceEquals(current, mark))
                {
                    _marks.Remove(key);
                }
            }

            return ValueTask.CompletedTask;
        });
        return ValueTask.FromResult(true);
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
            var expired = _marks.Where(m => m.Value.ExpiresAt <= now).Take(maxCount).Select(m => m.Key).ToList();
            foreach (var key in expired)
            {
                _marks.Remove(key);
            }

            return ValueTask.FromResult(expired.Count);
        }
    }

    private sealed record Mark(DateTimeOffset ExpiresAt);
}
