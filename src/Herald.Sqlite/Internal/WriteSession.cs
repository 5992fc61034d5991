using Herald.EventSourcing;
using Herald.Messages;
using Microsoft.Data.Sqlite;

namespace Herald.Sqlite.Internal;

/// <summary>
/// One writing connection and its prepared statements. It runs every write of the store inside a transaction the caller
/// begins with <see cref="Begin"/>: the coordinator's shared group transaction, or an open append's own. Not thread-safe:
/// one owner at a time, under the store's write lock.
/// </summary>
internal sealed class WriteSession : IDisposable
{
    private readonly SqliteConnection _connection;
    private readonly TimeProvider _timeProvider;
    private readonly List<SqliteCommand> _commands = [];
    private readonly SqliteCommand _begin;
    private readonly SqliteCommand _commit;
    private readonly SqliteCommand _rollback;
    private readonly SqliteCommand _savepoint;
    private readonly SqliteCommand _release;
    private readonly SqliteCommand _rollbackToSavepoint;
    private readonly SqliteCommand _lastPosition;
    private readonly SqliteCommand _findStream;
    private readonly SqliteCommand _insertStream;
    private readonly SqliteCommand _updateStream;
    private readonly SqliteCommand _findEventId;
    private readonly SqliteCommand _eventAt;
    private readonly SqliteCommand _isDeletionPoint;
    private readonly RawStatement _insertEvent;
    private readonly SqliteCommand _deleteStream;
    private readonly SqliteCommand _recordDeletion;
    private readonly SqliteCommand _setCheckpoint;
    private readonly SqliteCommand _saveSnapshot;
    private const int SqliteConstraint = 19;

    private long _nextPosition;
    private long _savedNextPosition;
    private long _savedLastAppended;
    private long _now;

    public WriteSession(SqliteConnection connection, TimeProvider timeProvider)
    {
        _connection = connection;
        _timeProvider = timeProvider;

        // IMMEDIATE takes the database's write lock at the start, so positions read below stay valid until the commit:
        // positions are handed out in commit order and a rolled-back one is simply reused (ADR 0001).
        _begin = Command("BEGIN IMMEDIATE");
        _commit = Command("COMMIT");
        _rollback = Command("ROLLBACK");
        _savepoint = Command("SAVEPOINT herald_write");
        _release = Command("RELEASE herald_write");
        _rollbackToSavepoint = Command("ROLLBACK TO herald_write; RELEASE herald_write");
        _lastPosition = Command("SELECT COALESCE(MAX(position), 0) FROM herald_events");
        _findStream = Command("SELECT stream_id, version, deleted_up_to, last_position FROM herald_streams WHERE name = $name", "$name");
        _insertStream = Command(
            "INSERT INTO herald_streams (name, category, version, deleted_up_to, last_position) VALUES ($name, $category, 0, 0, 0) RETURNING stream_id",
            "$name", "$category");
        _updateStream = Command("UPDATE herald_streams SET version = $version, last_position = $last_position WHERE stream_id = $stream_id",
            "$version", "$last_position", "$stream_id");
        _findEventId = Command("SELECT version FROM herald_events WHERE stream_id = $stream_id AND event_id = $event_id", "$stream_id", "$event_id");
        _eventAt = Command("SELECT event_id, event_type, body, position FROM herald_events WHERE stream_id = $stream_id AND version = $version",
            "$stream_id", "$version");
        _isDeletionPoint = Command("SELECT 1 FROM herald_stream_deletions WHERE stream_id = $stream_id AND version = $version", "$stream_id", "$version");
        _insertEvent = new RawStatement(connection,
            "INSERT INTO herald_events (position, stream_id, version, category, event_id, event_type, schema_version, time, time_offset, " +
            "correlation_id, causation_id, user_id, partition_key, content_type, headers, body, recorded_at) " +
            "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)");
        _deleteStream = Command("UPDATE herald_streams SET deleted_up_to = version WHERE stream_id = $stream_id", "$stream_id");
        _recordDeletion = Command(
            "INSERT OR IGNORE INTO herald_stream_deletions (stream_id, version, deleted_at) SELECT stream_id, version, $now FROM herald_streams WHERE stream_id = $stream_id",
            "$stream_id", "$now");
        _setCheckpoint = Command(
            "INSERT INTO herald_checkpoints (subscription_id, position, updated_at) VALUES ($id, $position, $now) " +
            "ON CONFLICT (subscription_id) DO UPDATE SET position = excluded.position, updated_at = excluded.updated_at",
            "$id", "$position", "$now");
        _saveSnapshot = Command(
            "INSERT INTO herald_snapshots (stream, version, state_type, schema_version, state, created_at, created_offset) " +
            "VALUES ($stream, $version, $state_type, $schema_version, $state, $created_at, $created_offset) " +
            "ON CONFLICT (stream) DO UPDATE SET version = excluded.version, state_type = excluded.state_type, schema_version = excluded.schema_version, " +
            "state = excluded.state, created_at = excluded.created_at, created_offset = excluded.created_offset " +
            "WHERE excluded.version >= herald_snapshots.version",
            "$stream", "$version", "$state_type", "$schema_version", "$state", "$created_at", "$created_offset");
    }

    /// <summary>The highest position appended in the current transaction, 0 when none.</summary>
    public long LastAppendedPosition { get; private set; }

    /// <summary>True between <see cref="Begin"/> and <see cref="Commit"/> or <see cref="Rollback"/>.</summary>
    public bool InTransaction { get; private set; }

    /// <summary>Begins a write transaction (waits for the write lock up to the busy timeout).</summary>
    public void Begin()
    {
        _begin.ExecuteNonQuery();
        InTransaction = true;
        _nextPosition = (long)_lastPosition.ExecuteScalar()! + 1;
        _now = _timeProvider.GetUtcNow().UtcTicks;
        LastAppendedPosition = 0;
    }

    public void Commit()
    {
        _commit.ExecuteNonQuery();
        InTransaction = false;
    }

    /// <summary>Rolls the transaction back; safe to call when SQLite already ended it after an error.</summary>
    public void Rollback()
    {
        InTransaction = false;
        LastAppendedPosition = 0;
        if (!_connection.Handle!.IsInvalid && SQLitePCL.raw.sqlite3_get_autocommit(_connection.Handle) == 0)
        {
            _rollback.ExecuteNonQuery();
        }
    }

    /// <summary>Marks a point the next write can be undone to without touching the others in the transaction.</summary>
    public void Savepoint()
    {
        _savepoint.ExecuteNonQuery();
        _savedNextPosition = _nextPosition;
        _savedLastAppended = LastAppendedPosition;
    }

    public void ReleaseSavepoint() => _release.ExecuteNonQuery();

    public void RollbackToSavepoint()
    {
        _rollbackToSavepoint.ExecuteNonQuery();
        _nextPosition = _savedNextPosition;
        LastAppendedPosition = _savedLastAppended;
    }

    /// <summary>Appends with the semantics of the port (see the in-memory reference); the arguments were validated.</summary>
    public AppendResult Append(string stream, ExpectedVersion expected, IReadOnlyList<Envelope> events)
    {
        var row = FindStream(stream);
        var current = row?.Current ?? 0;
        if (events.Count == 0)
        {
            return !expected.IsSatisfiedBy(current)
                ? throw new ConcurrencyException(stream, expected, current)
                : new AppendResult(current, current == 0 ? 0 : row!.Value.LastPosition);
        }

        if (row is { } existing && TryGetIdempotentResult(stream, existing, expected, events) is { } original)
        {
            return original;
        }

        if (!expected.IsSatisfiedBy(current))
        {
            throw new ConcurrencyException(stream, expected, current);
        }

        var category = StreamName.GetCategory(stream);
        long streamId;
        long version;
        if (row is { } found)
        {
            (streamId, version) = (found.Id, found.Version);
        }
        else
        {
            _insertStream.Parameters[0].Value = stream;
            _insertStream.Parameters[1].Value = category;
            streamId = (long)_insertStream.ExecuteScalar()!;
            version = 0;
        }

        var insert = _insertEvent;
        insert.Bind(2, streamId);
        insert.Bind(4, category);
        insert.Bind(17, _now);
        Span<byte> eventId = stackalloc byte[16];
        long position = 0;
        foreach (var envelope in events)
        {
            position = _nextPosition++;
            envelope.MessageId.TryWriteBytes(eventId, bigEndian: true, out _);
            insert.Bind(1, position);
            insert.Bind(3, ++version);
            insert.Bind(5, eventId);
            insert.Bind(6, envelope.MessageType);
            insert.Bind(7, envelope.SchemaVersion);
            insert.Bind(8, envelope.Time.UtcTicks);
            insert.Bind(9, EventRows.OffsetMinutes(envelope.Time));
            insert.Bind(10, envelope.CorrelationId);
            insert.Bind(11, envelope.CausationId);
            insert.Bind(12, envelope.UserId);
            insert.Bind(13, envelope.PartitionKey);
            insert.Bind(14, envelope.ContentType);
            insert.Bind(15, EventRows.HeadersJson(envelope.Headers));
            insert.Bind(16, envelope.Body.Span);
            try
            {
                insert.Execute();
            }
            catch (SqliteException ex) when (ex.SqliteErrorCode == SqliteConstraint && FindVersionOf(streamId, envelope.MessageId) is { } stored)
            {
                // The unique (stream, event id) key caught an id this stream already has, outside the batch's first event
                // (which was looked up above): a conflict. The caller rolls the partial insert back.
                throw new ConcurrencyException(stream, expected, current,
                    $"The event id {envelope.MessageId} is already stored at version {stored}, but not as part of the same append.");
            }
        }

        _updateStream.Parameters[0].Value = version;
        _updateStream.Parameters[1].Value = position;
        _updateStream.Parameters[2].Value = streamId;
        _updateStream.ExecuteNonQuery();
        LastAppendedPosition = position;
        return new AppendResult(version, position);
    }

    /// <summary>Soft-deletes with the semantics of the port: the events stay for idempotency checks but are no longer read.</summary>
    public void Delete(string stream, ExpectedVersion expected)
    {
        var row = FindStream(stream);
        var current = row?.Current ?? 0;
        if (!expected.IsSatisfiedBy(current))
        {
            throw new ConcurrencyException(stream, expected, current);
        }

        if (row is { } found)
        {
            _deleteStream.Parameters[0].Value = found.Id;
            _deleteStream.ExecuteNonQuery();
            _recordDeletion.Parameters[0].Value = found.Id;
            _recordDeletion.Parameters[1].Value = _now;
            _recordDeletion.ExecuteNonQuery();
        }
    }

    public void SetCheckpoint(string subscriptionId, long position)
    {
        _setCheckpoint.Parameters[0].Value = subscriptionId;
        _setCheckpoint.Parameters[1].Value = position;
        _setCheckpoint.Parameters[2].Value = _now;
        _setCheckpoint.ExecuteNonQuery();
    }

    public void SaveSnapshot(Snapshot snapshot)
    {
        var parameters = _saveSnapshot.Parameters;
        parameters[0].Value = snapshot.Stream;
        parameters[1].Value = snapshot.Version;
        parameters[2].Value = snapshot.StateType;
        parameters[3].Value = snapshot.SchemaVersion;
        EventRows.BindBlob(parameters[4], snapshot.State);
        parameters[5].Value = snapshot.CreatedAt.UtcTicks;
        parameters[6].Value = EventRows.OffsetMinutes(snapshot.CreatedAt);
        _saveSnapshot.ExecuteNonQuery();
    }

    public void Dispose()
    {
        _insertEvent.Dispose();
        foreach (var command in _commands)
        {
            command.Dispose();
        }

        _connection.Dispose();
    }

    private static ConcurrencyException Conflict(string stream, ExpectedVersion expected, StreamRow row, string detail) =>
        new(stream, expected, row.Current, detail);

    // The same rules as InMemoryEventStore: the ids must be the stream's events at the place this append would have put them,
    // with the same type and body; the first id decides whether this is a retry at all.
    private AppendResult? TryGetIdempotentResult(string stream, StreamRow row, ExpectedVersion expected, IReadOnlyList<Envelope> events)
    {
        if (FindVersionOf(row.Id, events[0].MessageId) is not { } start)
        {
            // Not a retry. Another of the ids may still be stored in the stream: the unique key on (stream, event id)
            // refuses it during the insert, which then reports the conflict.
            return null;
        }

        var place = expected.IsExact ? expected.Value + 1 : expected.IsNoStream ? StartVersionOfLife(row.Id, start) : start;
        if (start != place)
        {
            throw Conflict(stream, expected, row, $"The event id {events[0].MessageId} is already stored at version {start}, not where this append would put it.");
        }

        long position = 0;
        for (var i = 0; i < events.Count; i++)
        {
            var stored = EventAt(row.Id, start + i);
            if (stored is null || stored.Value.Id != events[i].MessageId)
            {
                throw Conflict(stream, expected, row, "Some of the event ids were already appended, but not as this same batch.");
            }

            if (!string.Equals(stored.Value.Type, events[i].MessageType, StringComparison.Ordinal) || !stored.Value.Body.AsSpan().SequenceEqual(events[i].Body.Span))
            {
                throw Conflict(stream, expected, row, $"The event id {events[i].MessageId} is already stored with another type or body.");
            }

            position = stored.Value.Position;
        }

        return new AppendResult(start + events.Count - 1, position);
    }

    // A NoStream append lands at the first version of a "life" of the stream: 1, or right after a deletion.
    private long StartVersionOfLife(long streamId, long version)
    {
        if (version == 1)
        {
            return version;
        }

        _isDeletionPoint.Parameters[0].Value = streamId;
        _isDeletionPoint.Parameters[1].Value = version - 1;
        return _isDeletionPoint.ExecuteScalar() is null ? -1 : version;
    }

    private StreamRow? FindStream(string stream)
    {
        _findStream.Parameters[0].Value = stream;
        using var reader = _findStream.ExecuteReader();
        return reader.Read() ? new StreamRow(reader.GetInt64(0), reader.GetInt64(1), reader.GetInt64(2), reader.GetInt64(3)) : null;
    }

    private long? FindVersionOf(long streamId, Guid eventId)
    {
        _findEventId.Parameters[0].Value = streamId;
        _findEventId.Parameters[1].Value = EventRows.ToBytes(eventId);
        return _findEventId.ExecuteScalar() is long version ? version : null;
    }

    private (Guid Id, string Type, byte[] Body, long Position)? EventAt(long streamId, long version)
    {
        _eventAt.Parameters[0].Value = streamId;
        _eventAt.Parameters[1].Value = version;
        using var reader = _eventAt.ExecuteReader();
        return reader.Read()
            ? (EventRows.ToGuid(reader.GetFieldValue<byte[]>(0)), reader.GetString(1), reader.GetFieldValue<byte[]>(2), reader.GetInt64(3))
            : null;
    }

    private SqliteCommand Command(string sql, params string[] parameters)
    {
        var command = _connection.CreateCommand();
#pragma warning disable CA2100 // Every statement is a constant of this class; values go through parameters.
        command.CommandText = sql;
#pragma warning restore CA2100
        foreach (var name in parameters)
        {
            command.Parameters.Add(new SqliteParameter { ParameterName = name });
        }

        _commands.Add(command);
        return command;
    }

    private readonly record struct StreamRow(long Id, long Version, long DeletedUpTo, long LastPosition)
    {
        public long Current => Version > DeletedUpTo ? Version : 0;
    }
}
