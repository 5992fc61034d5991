using Herald.Sqlite.Persistence;
using Herald.Sqlite.EventSourcing;
using Herald.Persistence;
using System.Collections.Concurrent;
using Herald.Reliability;
using Herald.Reliability.Inbox;
using Herald.Sqlite.Internal;

namespace Herald.Sqlite.Reliability;

/// <summary>
/// Inbox marks in the <c>herald_inbox</c> table of a <see cref="SqliteEventStore"/>'s file, expiring on the injected clock
/// (never SQLite's). A mark made in a <see cref="SqliteUnitOfWork"/> is written by its commit, with the handler's writes.
/// </summary>
/// <remarks>
/// Until that commit the mark is a claim held in this process, so a concurrent duplicate here sees it at once; a mark
/// another process committed meanwhile makes the commit fail (and the retry then finds the duplicate).
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
    private readonly ConcurrentDictionary<(string Endpoint, Guid MessageId), byte> _claims = new();

    /// <inheritdoc />
    public async ValueTask<bool> TryMarkHandledAsync(string endpoint, Guid messageId, TimeSpan window, IUnitOfWork? unitOfWork = null, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(endpoint);
        ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(window, TimeSpan.Zero);
        var now = _timeProvider.GetUtcNow();
        var expiresAt = (now + window).UtcTicks;
        var id = GuidBytes.Of(messageId);
        var own = _store.OwnUnitOfWork(unitOfWork);
        if (own is null)
        {
            var key = (endpoint, messageId);
            if (_claims.ContainsKey(key))
            {
                return false;
            }

            var marked = await _store.WriteAsync(session => Mark(session, endpoint, id, expiresAt, now.UtcTicks), cancellationToken).ConfigureAwait(false);
            if (marked && unitOfWork is not null)
            {
                // A unit of work without a transaction here: undo our own mark (not a later one) if it rolls back.
                unitOfWork.OnRolledBack(ct => new ValueTask(_store.WriteAsync(session => Unmark(session, endpoint, id, expiresAt), ct)));
            }

            return marked;
        }

        var claim = (endpoint, messageId);
        if (!_claims.TryAdd(claim, 0))
        {
            return false;
        }

        try
        {
            if (await IsHandledAsync(endpoint, messageId, cancellationToken).ConfigureAwait(false))
            {
                _claims.TryRemove(claim, out _);
                return false;
            }

            own.OnEnded(() => _claims.TryRemove(claim, out _));
        }
        catch
        {
            _claims.TryRemove(claim, out _);
            throw;
        }

        own.Enlist(session =>
        {
            if (!Mark(session, endpoint, id, expiresAt, now.UtcTicks))
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
}
