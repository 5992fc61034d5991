using Herald.Internal;
using Herald.Sqlite.Persistence;
using Herald.Sqlite.EventSourcing;
using Herald.Persistence;
using Herald.Reliability;
using Herald.Reliability.Outbox;
using Herald.Sqlite.Internal;
using Microsoft.Data.Sqlite;

namespace Herald.Sqlite.Reliability;

/// <summary>
/// The outbox in the <c>herald_outbox</c> table of a <see cref="SqliteEventStore"/>'s file. Rows added in a
/// <see cref="SqliteUnitOfWork"/> commit in its transaction; rows come back in the order they were committed (a row
/// sequence), and writes go through the store's single writer.
/// </summary>
internal sealed class SqliteOutboxStore(SqliteEventStore store) : IOutboxStore
{
    private const string Columns =
        "id, destination_kind, destination, created_at, created_offset, outbox_partition_key, deliver_at, deliver_offset, sent_at, sent_offset, " +
        "attempts, next_attempt_at, " + EnvelopeColumns.StoredNames;

    private const string InsertSql =
        "INSERT INTO herald_outbox (" + Columns + ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, " +
        "?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25)";

    private const string FetchSql = "SELECT " + Columns + " FROM herald_outbox WHERE sent_at IS NULL ORDER BY seq LIMIT $p0";

    // A row waiting on its back-off is skipped, and so is every later row of its key (the key keeps its order).
    private const string FetchDueSql = "SELECT " + Columns + " FROM herald_outbox o WHERE sent_at IS NULL " +
        "AND (next_attempt_at IS NULL OR next_attempt_at <= $p1) AND (outbox_partition_key IS NULL OR NOT EXISTS (" +
        "SELECT 1 FROM herald_outbox w WHERE w.sent_at IS NULL AND w.next_attempt_at > $p1 " +
        "AND w.outbox_partition_key = o.outbox_partition_key AND w.seq < o.seq)) ORDER BY seq LIMIT $p0";

    private const string RecordFailureSql =
        "UPDATE herald_outbox SET attempts = attempts + 1, next_attempt_at = ?2 WHERE id = ?1 AND sent_at IS NULL";
    private const string GetSql = "SELECT " + Columns + " FROM herald_outbox WHERE id = $p0";
    private const string CountSql = "SELECT COUNT(*) FROM herald_outbox WHERE sent_at IS NULL";
    private const string MarkSentSql = "UPDATE herald_outbox SET sent_at = ?2, sent_offset = ?3 WHERE id = ?1 AND sent_at IS NULL";

    private const string DeleteSentSql =
        "DELETE FROM herald_outbox WHERE seq IN (SELECT seq FROM herald_outbox WHERE sent_at IS NOT NULL AND sent_at < ?1 LIMIT ?2)";

    private readonly SqliteEventStore _store = store ?? throw new ArgumentNullException(nameof(store));

    /// <inheritdoc />
    public async ValueTask AddAsync(IReadOnlyList<OutboxMessage> messages, IUnitOfWork? unitOfWork = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(messages);
        var rows = messages.ToArray();
        foreach (var row in rows)
        {
            ArgumentNullException.ThrowIfNull(row, nameof(messages));
        }

        if (unitOfWork is null)
        {
            await _store.WriteAsync(session => Insert(session, rows), cancellationToken).ConfigureAwait(false);
        }
        else if (_store.OwnUnitOfWork(unitOfWork) is { } own)
        {
            own.Enlist(session => Insert(session, rows));
        }
        else
        {
            // A unit of work without a transaction here: the rows follow its commit.
            unitOfWork.OnCommitted(ct => new ValueTask(_store.WriteAsync(session => Insert(session, rows), ct)));
        }
    }

    /// <inheritdoc />
    public ValueTask<IReadOnlyList<OutboxMessage>> FetchPendingAsync(int maxCount, DateTimeOffset? dueBy = null, CancellationToken cancellationToken = default)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(maxCount, 1);
        return _store.ReadAsync<IReadOnlyList<OutboxMessage>>(reader =>
        {
            var command = dueBy is null ? reader.Command(FetchSql, 1) : reader.Command(FetchDueSql, 2);
            command.Parameters[0].Value = maxCount;
            if (dueBy is { } by)
            {
                command.Parameters[1].Value = by.UtcTicks;
            }

            return command.ReadAll(Read);
        }, cancellationToken);
    }

    /// <inheritdoc />
    public async ValueTask MarkSentAsync(IReadOnlyCollection<Guid> ids, DateTimeOffset sentAt, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(ids);
        if (ids.Count == 0)
        {
            return;
        }

        var keys = ids.Select(GuidBytes.Of).ToArray();
        await _store.WriteAsync(session =>
        {
            var update = session.Statement(MarkSentSql);
            foreach (var key in keys)
            {
                update.Bind(1, key);
                EnvelopeColumns.BindTime(update, 2, sentAt);
                update.Execute();
            }

            return true;
        }, cancellationToken).ConfigureAwait(false);
    }

    /// <inheritdoc />
    public async ValueTask RecordFailedAttemptAsync(Guid id, DateTimeOffset nextAttemptAt, CancellationToken cancellationToken = default)
    {
        var key = GuidBytes.Of(id);
        await _store.WriteAsync(session =>
        {
            var update = session.Statement(RecordFailureSql);
            update.Bind(1, key);
            update.Bind(2, StoredTime.Of(nextAttemptAt).UtcTicks);
            update.Execute();
            return true;
        }, cancellationToken).ConfigureAwait(false);
    }

    /// <inheritdoc />
    public async ValueTask<int> DeleteSentAsync(DateTimeOffset sentBefore, int maxCount, CancellationToken cancellationToken = default)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(maxCount, 1);
        return await _store.WriteAsync(session =>
        {
            var delete = session.Statement(DeleteSentSql);
            delete.Bind(1, sentBefore.UtcTicks);
            delete.Bind(2, maxCount);
            delete.Execute();
            return delete.Changes;
        }, cancellationToken).ConfigureAwait(false);
    }

    /// <inheritdoc />
    public ValueTask<long> CountPendingAsync(CancellationToken cancellationToken = default) =>
        _store.ReadAsync(reader => (long)reader.Command(CountSql, 0).ExecuteScalar()!, cancellationToken);

    /// <inheritdoc />
    public ValueTask<OutboxMessage?> GetAsync(Guid id, CancellationToken cancellationToken = default) =>
        _store.ReadAsync(reader =>
        {
            var command = reader.Command(GetSql, 1);
            command.Parameters[0].Value = GuidBytes.Of(id);
            return command.ReadFirst(Read);
        }, cancellationToken);

    private static bool Insert(WriteSession session, OutboxMessage[] rows)
    {
        var insert = session.Statement(InsertSql);
        foreach (var message in rows)
        {
            insert.Bind(1, GuidBytes.Of(message.Id));
            insert.Bind(2, message.DestinationKind.ToString());
            insert.Bind(3, message.Destination);
            // Its times kept as every engine keeps them (in UTC, to the microsecond), so a row reads back the same on each.
            EnvelopeColumns.BindTime(insert, 4, message.CreatedAt);
            insert.Bind(6, message.PartitionKey);
            EnvelopeColumns.BindTime(insert, 7, message.DeliverAt);
            EnvelopeColumns.BindTime(insert, 9, message.SentAt);
            insert.Bind(11, message.Attempts);
            insert.Bind(12, StoredTime.Of(message.NextAttemptAt)?.UtcTicks);
            EnvelopeColumns.BindStored(insert, 13, message.Envelope);
            insert.Execute();
        }

        return true;
    }

    private static OutboxMessage Read(SqliteDataReader row) => new()
    {
        Id = EventRows.ToGuid(row.GetFieldValue<byte[]>(0)),
        DestinationKind = Enum.Parse<OutboxDestinationKind>(row.GetString(1)),
        Destination = row.GetString(2),
        CreatedAt = EventRows.ToTime(row.GetInt64(3), row.GetInt32(4)),
        PartitionKey = EnvelopeColumns.Text(row, 5),
        DeliverAt = EnvelopeColumns.Time(row, 6, 7),
        SentAt = EnvelopeColumns.Time(row, 8, 9),
        Attempts = row.GetInt32(10),
        NextAttemptAt = row.IsDBNull(11) ? null : new DateTimeOffset(row.GetInt64(11), TimeSpan.Zero),
        Envelope = EnvelopeColumns.ReadStored(row, 12),
    };
}
