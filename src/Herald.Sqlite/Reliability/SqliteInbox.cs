using Herald.Sqlite.Persistence;
using Herald.Sqlite.EventSourcing;
using Herald.Persistence;
using Herald.Reliability;
using Herald.Reliability.Inbox;
using Herald.Sqlite.Internal;

namespace Herald.Sqlite.Reliability;

/// <summary>
/// Inbox marks in the <c>herald_inbox</c> table of a <see cref="SqliteEventStore"/>'s file, expiring on the injected clock
/// (never SQLite's). A mark made in a <see cref="SqliteUnitOfWork"/> is written by its commit, with the handler's writes,
/// and its window starts there.
/// </summary>
/// <remarks>
/// Until that commit the mark is a claim held in this process: a concurrent duplicate here waits for its unit of work to end
/// (a duplicate after a commit, the mark's new holder after a rollback); a mark another process committed meanwhile makes
/// the commit fail (and the retry then finds the duplicate).
/// </remarks>
/// <param name="store">The store whose file it uses (the store opens and migrates it).</param>
/// <param name="timeProvider">The clock expiries follow; the system clock when null.</param>
internal sealed class SqliteInbox(SqliteEventStore store, TimeProvider? timeProvider = null) : IInbox
{
    // Takes the key when it is free or its mark has expired; changes no row when a live mark exists.
    private const string MarkSql =
        "INSERT INTO herald_inbox (endpoint, message_id, expires_at) VALUES (?1, ?2, ?3) " +
        "ON CONFLICT (endpoint, message_id) DO UPDATE SET expires_at = excluded.expires_at WHERE herald_inbox.expires_at <= ?4";

    private const string UnmarkSql = "DELETE FROM herald_inbox WHERE endpoint = ?1 AND message_id = ?2 AND expires_at = ?3";
    private const string IsHandledSql = "SELECT 1 FROM herald_inbox WHERE endpoint = $p0 AND message_id = $p1 AND expires_at > $p2";

    private const string DeleteExpiredSql =
        "DELETE FROM herald_inbox WHERE (endpoint, message_id) IN (SELECT endpoint, message_id FROM herald_inbox WHERE expires_at <= ?1 LIMIT ?2)";

    private readonly SqliteEventStore _store = store ?? throw new ArgumentNullException(nameof(store));
    private readonly TimeProvider _timeProvider = timeProvider ?? TimeProvider.System;
    private readonly Dictionary<(string Endpoint, Guid MessageId), Claim> _claims = [];
    private readonly Lock _claimsGate = new();

    /// <inheritdoc />
    public async ValueTask<bool> TryMarkHandledAsync(string endpoint, Guid messageId, TimeSpan window, IUnitOfWork? unitOfWork = null, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(endpoint);
        ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(window, TimeSpan.Zero);
        var id = GuidBytes.Of(messageId);
        var own = _store.OwnUnitOfWork(unitOfWork);
        if (own is null)
        {
            await ClaimAsync((endpoint, messageId), null, cancellationToken).ConfigureAwait(false);

            var now = _timeProvider.GetUtcNow();
            var expiresAt = (now + window).UtcTicks;
            var marked = await _store.WriteAsync(session => Mark(session, endpoint, id, expiresAt, now.UtcTicks), cancellationToken).ConfigureAwait(false);
            if (marked && unitOfWork is not null)
            {
                // A unit of work without a transaction here: undo our own mark (not a later one) if it rolls back.
                unitOfWork.OnRolledBack(ct => new ValueTask(_store.WriteAsync(session => Unmark(session, endpoint, id, expiresAt), ct)));
            }

            return marked;
        }

        var claim = (endpoint, messageId);
        if (!await ClaimAsync(claim, own, cancellationToken).ConfigureAwait(false))
        {
            return false;
        }

        try
        {
            if (await IsHandledAsync(endpoint, messageId, cancellationToken).ConfigureAwait(false))
            {
                Release(claim);
                return false;
            }

            own.OnEnded(() => Release(claim));
        }
        catch
        {
            Release(claim);
            throw;
        }

        own.Enlist(session =>
        {
            // Timed when the commit writes it, not when the attempt began: a handler longer than the window would otherwise
            // commit a mark already expired, and the redelivery of a message whose ack was lost would run it again.
            var now = _timeProvider.GetUtcNow();
            if (!Mark(session, endpoint, id, (now + window).UtcTicks, now.UtcTicks))
            {
                throw new InvalidOperationException(
                    $"Message {messageId} was marked handled at endpoint '{endpoint}' by another process while this attempt ran; nothing of the attempt was committed.");
            }
        });
        return true;
    }

    /// <inheritdoc />
    public ValueTask<bool> IsHandledAsync(string endpoint, Guid messageId, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(endpoint);
        var now = _timeProvider.GetUtcNow().UtcTicks;
        return _store.ReadAsync(reader =>
        {
            var command = reader.Command(IsHandledSql, 3);
            command.Parameters[0].Value = endpoint;
            command.Parameters[1].Value = GuidBytes.Of(messageId);
            command.Parameters[2].Value = now;
            return command.ExecuteScalar() is not null;
        }, cancellationToken);
    }

    /// <inheritdoc />
    public async ValueTask<int> DeleteExpiredAsync(int maxCount, CancellationToken cancellationToken = default)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(maxCount, 1);
        var now = _timeProvider.GetUtcNow().UtcTicks;
        return await _store.WriteAsync(session =>
        {
            var delete = session.Statement(DeleteExpiredSql);
            delete.Bind(1, now);
            delete.Bind(2, maxCount);
            delete.Execute();
            return delete.Changes;
        }, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>
    /// Waits while a unit of work of this process other than <paramref name="own"/> holds the key's claim (its commit or
    /// rollback decides whether this is a duplicate, as a row lock would), then takes the claim for <paramref name="own"/>
    /// if given; false when <paramref name="own"/> holds it already.
    /// </summary>
    private async ValueTask<bool> ClaimAsync((string Endpoint, Guid MessageId) key, SqliteUnitOfWork? own, CancellationToken cancellationToken)
    {
        while (true)
        {
            Task ended;
            lock (_claimsGate)
            {
                if (!_claims.TryGetValue(key, out var held))
                {
                    if (own is not null)
                    {
                        _claims.Add(key, new Claim(own, null));
                    }

                    return true;
                }

                if (ReferenceEquals(held.Owner, own))
                {
                    return false;
                }

                // Created only when a second mark waits, so the uncontended path allocates no signal.
                if (held.Ended is null)
                {
                    _claims[key] = held = held with { Ended = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously) };
                }

                ended = held.Ended!.Task;
            }

            await ended.WaitAsync(cancellationToken).ConfigureAwait(false);
        }
    }

    private void Release((string Endpoint, Guid MessageId) key)
    {
        Claim held;
        lock (_claimsGate)
        {
            if (!_claims.Remove(key, out held))
            {
                return;
            }
        }

        held.Ended?.TrySetResult();
    }

    private static bool Mark(WriteSession session, string endpoint, byte[] id, long expiresAt, long now)
    {
        var mark = session.Statement(MarkSql);
        mark.Bind(1, endpoint);
        mark.Bind(2, id);
        mark.Bind(3, expiresAt);
        mark.Bind(4, now);
        mark.Execute();
        return mark.Changes == 1;
    }

    private static bool Unmark(WriteSession session, string endpoint, byte[] id, long expiresAt)
    {
        var unmark = session.Statement(UnmarkSql);
        unmark.Bind(1, endpoint);
        unmark.Bind(2, id);
        unmark.Bind(3, expiresAt);
        unmark.Execute();
        return true;
    }

    /// <summary>The claim of an id by the unit of work that marked it, with the signal a waiting second mark gets when it ends.</summary>
    private readonly record struct Claim(SqliteUnitOfWork Owner, TaskCompletionSource? Ended);
}
