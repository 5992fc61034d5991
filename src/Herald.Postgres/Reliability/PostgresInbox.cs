using Herald.Postgres.Persistence;
using Herald.Persistence;
using Herald.Postgres.EventSourcing;
using Herald.Postgres.Internal;
using Herald.Reliability;
using Herald.Reliability.Inbox;
using Npgsql;

namespace Herald.Postgres.Reliability;

/// <summary>
/// Inbox marks in the <c>inbox</c> table of a <see cref="PostgresEventStore"/>'s schema, expiring on the injected clock
/// (never the server's). A mark made in a <see cref="PostgresUnitOfWork"/> is written in its transaction: it commits with
/// the handler's writes, and a concurrent duplicate waits on the row until then (and is a duplicate if it committed).
/// </summary>
internal sealed class PostgresInbox : IInbox
{
    private readonly PostgresEventStore _store;
    private readonly TimeProvider _timeProvider;
    private readonly string _mark;
    private readonly string _unmark;
    private readonly string _isHandled;
    private readonly string _deleteExpired;

    /// <summary>Creates the inbox in the schema of <paramref name="store"/>, expiring marks on <paramref name="timeProvider"/> (the system clock when null).</summary>
    public PostgresInbox(PostgresEventStore store, TimeProvider? timeProvider = null)
    {
        ArgumentNullException.ThrowIfNull(store);
        _store = store;
        _timeProvider = timeProvider ?? TimeProvider.System;
        var table = store.Table("inbox");

        // Takes the key when it is free or its mark has expired; changes no row (so reports a duplicate) when a live mark exists.
        _mark = $"INSERT INTO {table} AS i (endpoint, message_id, expires_at) VALUES ($1, $2, $3) " +
                "ON CONFLICT (endpoint, message_id) DO UPDATE SET expires_at = excluded.expires_at WHERE i.expires_at <= $4";
        _unmark = $"DELETE FROM {table} WHERE endpoint = $1 AND message_id = $2 AND expires_at = $3";
        _isHandled = $"SELECT EXISTS (SELECT 1 FROM {table} WHERE endpoint = $1 AND message_id = $2 AND expires_at > $3)";
        _deleteExpired = $"DELETE FROM {table} WHERE (endpoint, message_id) IN (SELECT endpoint, message_id FROM {table} WHERE expires_at <= $1 LIMIT $2)";
    }

    /// <inheritdoc />
    public async ValueTask<bool> TryMarkHandledAsync(string endpoint, Guid messageId, TimeSpan window, IUnitOfWork? unitOfWork = null, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(endpoint);
        ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(window, TimeSpan.Zero);
        var now = _timeProvider.GetUtcNow();
        var expiresAt = now + window;
        if (_store.OwnUnitOfWork(unitOfWork) is { } own)
        {
            return await own.ExecuteAsync((connection, transaction, token) => MarkAsync(connection, transaction, endpoint, messageId, expiresAt, now, token), cancellationToken)
                .ConfigureAwait(false);
        }

        bool marked;
        await using (var connection = await _store.OpenStartedAsync(cancellationToken).ConfigureAwait(false))
        {
            marked = await MarkAsync(connection, null, endpoint, messageId, expiresAt, now, cancellationToken).ConfigureAwait(false);
        }

        if (marked && unitOfWork is not null)
        {
            // A unit of work without a transaction here: undo only our own mark (matched by its expiry) if it rolls back.
            unitOfWork.OnRolledBack(async token =>
            {
                NpgsqlParameter[] parameters = [EnvelopeColumns.Text(endpoint), EnvelopeColumns.Id(messageId), EnvelopeColumns.Time(expiresAt)];
                await _store.ExecuteAloneAsync(_unmark, parameters, token).ConfigureAwait(false);
            });
        }

        return marked;
    }

    /// <inheritdoc />
    public async ValueTask<bool> IsHandledAsync(string endpoint, Guid messageId, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(endpoint);
        NpgsqlParameter[] parameters = [EnvelopeColumns.Text(endpoint), EnvelopeColumns.Id(messageId), EnvelopeColumns.Time(_timeProvider.GetUtcNow())];
        return await _store.ScalarAloneAsync<bool>(_isHandled, parameters, cancellationToken).ConfigureAwait(false);
    }

    /// <inheritdoc />
    public async ValueTask<int> DeleteExpiredAsync(int maxCount, CancellationToken cancellationToken = default)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(maxCount, 1);
        NpgsqlParameter[] parameters = [EnvelopeColumns.Time(_timeProvider.GetUtcNow()), EnvelopeColumns.Int(maxCount)];
        return await _store.ExecuteAloneAsync(_deleteExpired, parameters, cancellationToken).ConfigureAwait(false);
    }

    private async Task<bool> MarkAsync(
        NpgsqlConnection connection, NpgsqlTransaction? transaction, string endpoint, Guid messageId, DateTimeOffset expiresAt, DateTimeOffset now, CancellationToken cancellationToken)
    {
        await using var command = new NpgsqlCommand(_mark, connection, transaction);
        command.Parameters.Add(EnvelopeColumns.Text(endpoint));
        command.Parameters.Add(EnvelopeColumns.Id(messageId));
        command.Parameters.Add(EnvelopeColumns.Time(expiresAt));
        command.Parameters.Add(EnvelopeColumns.Time(now));
        return await command.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false) == 1;
    }
}
