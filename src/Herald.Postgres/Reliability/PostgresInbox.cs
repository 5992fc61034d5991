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
/// <param name="store">The event store in whose schema the table lives (it creates and migrates it).</param>
/// <param name="timeProvider">The clock the marks expire on; the system clock when null.</param>
internal sealed class PostgresInbox(PostgresEventStore store, TimeProvider? timeProvider = null) : IInbox
{
    private readonly PostgresEventStore _store = store ?? throw new ArgumentNullException(nameof(store));
    private readonly TimeProvider _timeProvider = timeProvider ?? TimeProvider.System;
    private readonly TableSql _sql = new(store.Table("inbox"));

    /// <inheritdoc />
    public async ValueTask<bool> TryMarkHandledAsync(string endpoint, Guid messageId, TimeSpan window, IUnitOfWork? unitOfWork = null, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(endpoint);
        NulText.ThrowIfHeld(endpoint, "inbox endpoint", nameof(endpoint));
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
                await _store.ExecuteAloneAsync(_sql.Unmark, parameters, token).ConfigureAwait(false);
            });
        }

        return marked;
    }

    /// <inheritdoc />
    public async ValueTask<bool> IsHandledAsync(string endpoint, Guid messageId, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(endpoint);
        if (NulText.Holds(endpoint))
        {
            // No mark can have it (marking refuses it).
            return false;
        }

        NpgsqlParameter[] parameters = [EnvelopeColumns.Text(endpoint), EnvelopeColumns.Id(messageId), EnvelopeColumns.Time(_timeProvider.GetUtcNow())];
        return await _store.ScalarAloneAsync<bool>(_sql.IsHandled, parameters, cancellationToken).ConfigureAwait(false);
    }

    /// <inheritdoc />
    public async ValueTask<int> DeleteExpiredAsync(int maxCount, CancellationToken cancellationToken = default)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(maxCount, 1);
        NpgsqlParameter[] parameters = [EnvelopeColumns.Time(_timeProvider.GetUtcNow()), EnvelopeColumns.Int(maxCount)];
        return await _store.ExecuteAloneAsync(_sql.DeleteExpired, parameters, cancellationToken).ConfigureAwait(false);
    }

    private async Task<bool> MarkAsync(
        NpgsqlConnection connection, NpgsqlTransaction? transaction, string endpoint, Guid messageId, DateTimeOffset expiresAt, DateTimeOffset now, CancellationToken cancellationToken)
    {
        await using var command = new NpgsqlCommand(_sql.Mark, connection, transaction);
        command.Parameters.Add(EnvelopeColumns.Text(endpoint));
        command.Parameters.Add(EnvelopeColumns.Id(messageId));
        command.Parameters.Add(EnvelopeColumns.Time(expiresAt));
        command.Parameters.Add(EnvelopeColumns.Time(now));
        return await command.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false) == 1;
    }

    /// <summary>The statements on the <c>inbox</c> table of the store's schema.</summary>
    private sealed class TableSql(string table)
    {
        // Takes the key when it is free or its mark has expired; changes no row (so reports a duplicate) when a live mark exists.
        public string Mark { get; } = $"INSERT INTO {table} AS i (endpoint, message_id, expires_at) VALUES ($1, $2, $3) " +
            "ON CONFLICT (endpoint, message_id) DO UPDATE SET expires_at = excluded.expires_at WHERE i.expires_at <= $4";

        public string Unmark { get; } = $"DELETE FROM {table} WHERE endpoint = $1 AND message_id = $2 AND expires_at = $3";

        public string IsHandled { get; } = $"SELECT EXISTS (SELECT 1 FROM {table} WHERE endpoint = $1 AND message_id = $2 AND expires_at > $3)";

        // The expiry is checked again outside the subquery: a mark a redelivery took again while the delete waited on its row
        // lock is live once that commits, and only the outer WHERE is checked against the row's new version (READ COMMITTED).
        public string DeleteExpired { get; } =
            $"DELETE FROM {table} WHERE (endpoint, message_id) IN (SELECT endpoint, message_id FROM {table} WHERE expires_at <= $1 LIMIT $2) AND expires_at <= $1";
    }
}
