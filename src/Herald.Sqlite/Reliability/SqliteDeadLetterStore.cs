using Herald.Sqlite.EventSourcing;
using Herald.Persistence;
using Herald.Reliability.DeadLetters;
using Herald.Sqlite.Internal;
using Microsoft.Data.Sqlite;

namespace Herald.Sqlite.Reliability;

/// <summary>
/// Dead letters in the <c>herald_dead_letters</c> table of a <see cref="SqliteEventStore"/>'s file. Ids are stored as
/// big-endian bytes, so SQLite's order is <see cref="Guid"/> order; writes go through the store's single writer.
/// </summary>
internal sealed class SqliteDeadLetterStore(SqliteEventStore store) : IDeadLetterStore
{
    private const string Columns =
        "id, endpoint, cause, error_type, error_message, stack_trace, fingerprint, first_failure, first_failure_offset, last_failure, " +
        "last_failure_offset, attempt_count, retry_count, last_retry_error, last_retry_time, last_retry_offset, " + EnvelopeColumns.StoredNames;

    private const string InsertSql =
        "INSERT OR IGNORE INTO herald_dead_letters (" + Columns + ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, " +
        "?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28, ?29)";

    // One statement for every combination of filters: a null parameter turns its filter off. $pN is parameter N + 1 for
    // the writer's statements, as each name first appears in order.
    private const string WhereSql =
        " WHERE ($p0 IS NULL OR endpoint = $p0) AND ($p1 IS NULL OR message_type = $p1) AND ($p2 IS NULL OR fingerprint = $p2)" +
        " AND ($p3 IS NULL OR last_failure >= $p3) AND ($p4 IS NULL OR last_failure < $p4) AND ($p5 IS NULL OR id > $p5)";

    private const string ListSql = "SELECT " + Columns + " FROM herald_dead_letters" + WhereSql + " ORDER BY id LIMIT $p6";

    // SQLite plans a statement once, whatever its parameters, so "($p0 IS NULL OR endpoint = $p0)" cannot use an index: a
    // page of one endpoint, or a page after an id, walked the table in id order from its start (issue 16: 20 pages of 100
    // from the middle fell from 2,550 to 1,060 rows/s between 100 k and 1 M rows). A page listed by endpoint and/or after an
    // id gets a statement that names them plainly, so it starts in the index where the page starts.
    private const string OtherFiltersSql =
        " AND ($p1 IS NULL OR message_type = $p1) AND ($p2 IS NULL OR fingerprint = $p2) AND ($p3 IS NULL OR last_failure >= $p3) AND ($p4 IS NULL OR last_failure < $p4)";

    private const string ListByEndpointSql = "SELECT " + Columns + " FROM herald_dead_letters WHERE endpoint = $p0" + OtherFiltersSql + " ORDER BY id LIMIT $p6";
    private const string ListByEndpointAfterSql = "SELECT " + Columns + " FROM herald_dead_letters WHERE endpoint = $p0 AND id > $p5" + OtherFiltersSql + " ORDER BY id LIMIT $p6";
    private const string ListAfterSql = "SELECT " + Columns + " FROM herald_dead_letters WHERE id > $p5" + OtherFiltersSql + " ORDER BY id LIMIT $p6";
    private const string CountSql = "SELECT COUNT(*) FROM herald_dead_letters" + WhereSql;

    // The counts the triggers of migration 8 keep (issue 16): one row per endpoint, whatever the size of the table.
    private const string CountEndpointSql = "SELECT coalesce(SUM(count), 0) FROM herald_dead_letter_counts WHERE endpoint = $p0";
    private const string CountAllSql = "SELECT coalesce(SUM(count), 0) FROM herald_dead_letter_counts";
    private const string DeleteManySql = "DELETE FROM herald_dead_letters WHERE id IN (SELECT id FROM herald_dead_letters" + WhereSql + " ORDER BY id LIMIT $p6)";

    // A purge of one endpoint names it plainly, for the reason of the listings above: it starts in the endpoint's index
    // instead of walking the table from its start (and again for every batch of a large purge). Same parameter order.
    private const string DeleteManyByEndpointSql =
        "DELETE FROM herald_dead_letters WHERE id IN (SELECT id FROM herald_dead_letters WHERE endpoint = $p0" + OtherFiltersSql +
        " AND ($p5 IS NULL OR id > $p5) ORDER BY id LIMIT $p6)";
    private const string GetSql = "SELECT " + Columns + " FROM herald_dead_letters WHERE id = $p0";
    private const string DeleteSql = "DELETE FROM herald_dead_letters WHERE id = ?1";

    private const string RecordRetrySql =
        "UPDATE herald_dead_letters SET retry_count = retry_count + 1, last_retry_error = ?2, last_retry_time = ?3, last_retry_offset = ?4 WHERE id = ?1";

    private readonly SqliteEventStore _store = store ?? throw new ArgumentNullException(nameof(store));

    /// <inheritdoc />
    public async ValueTask<bool> AddAsync(DeadLetter deadLetter, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(deadLetter);
        return await _store.WriteAsync(session => Insert(session, deadLetter), cancellationToken).ConfigureAwait(false);
    }

    /// <inheritdoc />
    public ValueTask AddAsync(DeadLetter deadLetter, IUnitOfWork unitOfWork, Action<bool>? added = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(deadLetter);
        cancellationToken.ThrowIfCancellationRequested();
        var own = _store.Own(unitOfWork);
        var stored = false;
        own.Enlist(session => stored = Insert(session, deadLetter));
        if (added is not null)
        {
            own.OnCommitted(_ =>
            {
                added(stored);
                return ValueTask.CompletedTask;
            });
        }

        return ValueTask.CompletedTask;
    }

    // True when the row went in: OR IGNORE leaves an existing id as it is, and SQLite then counts no change (its triggers'
    // writes to the counts are never counted).
    private static bool Insert(WriteSession session, DeadLetter deadLetter)
    {
        var insert = session.Statement(InsertSql);
        insert.Bind(1, GuidBytes.Of(deadLetter.Id));
        insert.Bind(2, deadLetter.Endpoint);
        insert.Bind(3, deadLetter.Cause.ToString());
        insert.Bind(4, deadLetter.ErrorType);
        insert.Bind(5, deadLetter.ErrorMessage);
        insert.Bind(6, deadLetter.StackTrace);
        insert.Bind(7, deadLetter.Fingerprint);
        // Its times kept as every engine keeps them (in UTC, to the microsecond), so a dead letter reads back the same on each.
        EnvelopeColumns.BindTime(insert, 8, deadLetter.FirstFailureTime);
        EnvelopeColumns.BindTime(insert, 10, deadLetter.LastFailureTime);
        insert.Bind(12, deadLetter.AttemptCount);
        insert.Bind(13, deadLetter.RetryCount);
        insert.Bind(14, deadLetter.LastRetryError);
        EnvelopeColumns.BindTime(insert, 15, deadLetter.LastRetryTime);
        EnvelopeColumns.BindStored(insert, 17, deadLetter.Envelope);
        insert.Execute();
        return insert.Changes == 1;
    }

    /// <inheritdoc />
    public ValueTask<DeadLetter?> GetAsync(Guid id, CancellationToken cancellationToken = default) =>
        _store.ReadAsync(reader =>
        {
            var command = reader.Command(GetSql, 1);
            command.Parameters[0].Value = GuidBytes.Of(id);
            return command.ReadFirst(Read);
        }, cancellationToken);

    /// <summary>The statement that lists a page for <paramref name="query"/> ($p0..$p5 the filters, $p6 the limit).</summary>
    internal static string ListSqlFor(DeadLetterQuery query) => (query.Endpoint, query.After) switch
    {
        (not null, not null) => ListByEndpointAfterSql,
        (not null, null) => ListByEndpointSql,
        (null, not null) => ListAfterSql,
        _ => ListSql,
    };

    /// <summary>The statement that deletes a batch for <paramref name="query"/> (parameters bound in the order $p0..$p6).</summary>
    internal static string DeleteManySqlFor(DeadLetterQuery query) => query.Endpoint is null ? DeleteManySql : DeleteManyByEndpointSql;

    /// <inheritdoc />
    public ValueTask<IReadOnlyList<DeadLetter>> ListAsync(DeadLetterQuery query, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(query);
        return _store.ReadAsync<IReadOnlyList<DeadLetter>>(reader =>
        {
            var command = reader.Command(ListSqlFor(query), 7);
            BindFilters(command, query);
            command.Parameters[6].Value = query.Limit;
            return command.ReadAll(Read);
        }, cancellationToken);
    }

    /// <inheritdoc />
    public ValueTask<long> CountAsync(DeadLetterQuery query, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(query);
        // The monitor, the retention and the health check count a whole endpoint or everything; any other filter counts rows.
        if (query is { MessageType: null, Fingerprint: null, FailedFrom: null, FailedBefore: null, After: null })
        {
            return _store.ReadAsync(reader =>
            {
                if (query.Endpoint is null)
                {
                    return (long)reader.Command(CountAllSql, 0).ExecuteScalar()!;
                }

                var command = reader.Command(CountEndpointSql, 1);
                command.Parameters[0].Value = query.Endpoint;
                return (long)command.ExecuteScalar()!;
            }, cancellationToken);
        }

        return _store.ReadAsync(reader =>
        {
            var command = reader.Command(CountSql, 6);
            BindFilters(command, query);
            return (long)command.ExecuteScalar()!;
        }, cancellationToken);
    }

    /// <inheritdoc />
    public async ValueTask<bool> DeleteAsync(Guid id, CancellationToken cancellationToken = default)
    {
        var key = GuidBytes.Of(id);
        return await _store.WriteAsync(session => Delete(session, key), cancellationToken).ConfigureAwait(false);
    }

    /// <inheritdoc />
    public ValueTask DeleteAsync(Guid id, IUnitOfWork unitOfWork, CancellationToken cancellationToken = default)
    {
        cancellationToken.ThrowIfCancellationRequested();
        var own = _store.Own(unitOfWork);
        var key = GuidBytes.Of(id);

        // Runs in the commit's one write: found gone (another unit of work's commit, which the single writer ran first,
        // deleted it), it throws, and that write undoes the unit of work's other writes.
        own.Enlist(session =>
        {
            if (!Delete(session, key))
            {
                throw new DeadLetterNotFoundException(id);
            }
        });
        return ValueTask.CompletedTask;
    }

    private static bool Delete(WriteSession session, byte[] key)
    {
        var delete = session.Statement(DeleteSql);
        delete.Bind(1, key);
        delete.Execute();
        return delete.Changes == 1;
    }

    /// <inheritdoc />
    public async ValueTask<int> DeleteManyAsync(DeadLetterQuery query, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(query);
        return await _store.WriteAsync(session =>
        {
            var delete = session.Statement(DeleteManySqlFor(query));
            delete.Bind(1, query.Endpoint);
            delete.Bind(2, query.MessageType);
            delete.Bind(3, query.Fingerprint);
            delete.Bind(4, query.FailedFrom?.UtcTicks);
            delete.Bind(5, query.FailedBefore?.UtcTicks);
            if (query.After is { } after)
            {
                delete.Bind(6, GuidBytes.Of(after));
            }
            else
            {
                delete.BindNull(6);
            }

            delete.Bind(7, query.Limit);
            delete.Execute();
            return delete.Changes;
        }, cancellationToken).ConfigureAwait(false);
    }

    /// <inheritdoc />
    public async ValueTask<bool> RecordRetryFailureAsync(Guid id, string error, DateTimeOffset time, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(error);
        var key = GuidBytes.Of(id);
        return await _store.WriteAsync(session =>
        {
            var update = session.Statement(RecordRetrySql);
            update.Bind(1, key);
            update.Bind(2, error);
            EnvelopeColumns.BindTime(update, 3, time);
            update.Execute();
            return update.Changes == 1;
        }, cancellationToken).ConfigureAwait(false);
    }

    private static void BindFilters(SqliteCommand command, DeadLetterQuery query)
    {
        command.Parameters[0].Value = (object?)query.Endpoint ?? DBNull.Value;
        command.Parameters[1].Value = (object?)query.MessageType ?? DBNull.Value;
        command.Parameters[2].Value = (object?)query.Fingerprint ?? DBNull.Value;
        command.Parameters[3].Value = query.FailedFrom is { } from ? from.UtcTicks : DBNull.Value;
        command.Parameters[4].Value = query.FailedBefore is { } before ? before.UtcTicks : DBNull.Value;
        command.Parameters[5].Value = query.After is { } after ? GuidBytes.Of(after) : DBNull.Value;
    }

    private static DeadLetter Read(SqliteDataReader row) => new()
    {
        Id = EventRows.ToGuid(row.GetFieldValue<byte[]>(0)),
        Endpoint = row.GetString(1),
        Cause = Enum.Parse<DeadLetterCause>(row.GetString(2)),
        ErrorType = row.GetString(3),
        ErrorMessage = row.GetString(4),
        StackTrace = EnvelopeColumns.Text(row, 5),
        Fingerprint = row.GetString(6),
        FirstFailureTime = EventRows.ToTime(row.GetInt64(7), row.GetInt32(8)),
        LastFailureTime = EventRows.ToTime(row.GetInt64(9), row.GetInt32(10)),
        AttemptCount = row.GetInt32(11),
        RetryCount = row.GetInt32(12),
        LastRetryError = EnvelopeColumns.Text(row, 13),
        LastRetryTime = EnvelopeColumns.Time(row, 14, 15),
        Envelope = EnvelopeColumns.ReadStored(row, 16),
    };
}
