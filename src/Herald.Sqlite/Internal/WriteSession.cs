using Herald.Sqlite.EventSourcing;
using Herald.EventSourcing;
using Herald.Internal;
using Herald.Messages;
using Microsoft.Data.Sqlite;

namespace Herald.Sqlite.Internal;

/// <summary>
/// One writing connection and its prepared statements. It runs every write of the store inside a transaction the caller
/// begins with <see cref="Begin"/>: the coordinator's shared group transaction, or an open append's own. A write that
/// throws may have written part of its rows; the caller undoes it (a savepoint, or the whole transaction). Not thread-safe:
/// one owner at a time, under the store's write lock.
/// </summary>
internal sealed class WriteSession : IDisposable
{
    private const int SqliteConstraint = 19;

    // BEGIN waits for another connection's write lock in slices this long, asking between them whether the write is still
    // wanted: a cancelled caller is let go within a slice, not after the whole busy timeout.
    private const int BusySliceMilliseconds = 50;

    private readonly SqliteConnection _connection;
    private readonly TimeProvider _timeProvider;
    private readonly int _busyMilliseconds;
    private readonly List<RawStatement> _statements = [];
    private readonly Dictionary<string, RawStatement> _byText = new(StringComparer.Ordinal);
    private readonly RawStatement _begin;
    private readonly RawStatement _commit;
    private readonly RawStatement _rollback;
    private readonly RawStatement _savepoint;
    private readonly RawStatement _release;
    private readonly RawStatement _rollbackToSavepoint;
    private readonly RawStatement _lastPosition;
    private readonly RawStatement _findStream;
    private readonly RawStatement _insertStream;
    private readonly RawStatement _updateStream;
    private readonly RawStatement _findEventId;
    private readonly RawStatement _eventAt;
    private readonly RawStatement _isDeletionPoint;
    private readonly RawStatement _insertEvent;
    private readonly RawStatement _deleteStream;
    private readonly RawStatement _recordDeletion;
    private readonly RawStatement _setCheckpoint;
    private readonly RawStatement _advanceCheckpoint;
    private readonly RawStatement _saveSnapshot;
    private long _nextPosition;
    private long _savedNextPosition;
    private long _savedLastAppended;
    private long _now;

    public WriteSession(SqliteConnection connection, TimeProvider timeProvider, TimeSpan busyTimeout)
    {
        _connection = connection;
        _timeProvider = timeProvider;
        _busyMilliseconds = (int)Math.Min(int.MaxValue, (long)busyTimeout.TotalMilliseconds);
        try
        {
            // IMMEDIATE takes the database's write lock at the start, so the positions read below stay valid until the
            // commit: positions are handed out in commit order and a rolled-back one is simply reused (ADR 0001).
            _begin = Prepare("BEGIN IMMEDIATE");
            _commit = Prepare("COMMIT");
            _rollback = Prepare("ROLLBACK");
            _savepoint = Prepare("SAVEPOINT herald_write");
            _release = Prepare("RELEASE herald_write");
            _rollbackToSavepoint = Prepare("ROLLBACK TO herald_write");
            _lastPosition = Prepare("SELECT COALESCE(MAX(position), 0) FROM herald_events");
            _findStream = Prepare("SELECT stream_id, version, deleted_up_to, last_position FROM herald_streams WHERE name = ?1");
            _insertStream = Prepare("INSERT INTO herald_streams (name, category, version, deleted_up_to, last_position) VALUES (?1, ?2, 0, 0, 0) RETURNING stream_id");
            _updateStream = Prepare("UPDATE herald_streams SET version = ?1, last_position = ?2 WHERE stream_id = ?3");
            _findEventId = Prepare("SELECT version FROM herald_events WHERE stream_id = ?1 AND event_id = ?2");
            _eventAt = Prepare("SELECT event_id, event_type, body, position FROM herald_events WHERE stream_id = ?1 AND version = ?2");
            _isDeletionPoint = Prepare("SELECT 1 FROM herald_stream_deletions WHERE stream_id = ?1 AND version = ?2");
            _insertEvent = Prepare(
                "INSERT INTO herald_events (position, stream_id, version, category, event_id, event_type, schema_version, time, time_offset, " +
                "correlation_id, causation_id, user_id, partition_key, content_type, headers, body, recorded_at) " +
                "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17)");
            _deleteStream = Prepare("UPDATE herald_streams SET deleted_up_to = version WHERE stream_id = ?1");
            _recordDeletion = Prepare(
                "INSERT OR IGNORE INTO herald_stream_deletions (stream_id, version, deleted_at) SELECT stream_id, version, ?2 FROM herald_streams WHERE stream_id = ?1");
            _setCheckpoint = Prepare(
                "INSERT INTO herald_checkpoints (subscription_id, position, updated_at) VALUES (?1, ?2, ?3) " +
                "ON CONFLICT (subscription_id) DO UPDATE SET position = excluded.position, updated_at = excluded.updated_at");
            _advanceCheckpoint = Prepare(
                "INSERT INTO herald_checkpoints (subscription_id, position, updated_at) VALUES (?1, ?2, ?3) " +
                "ON CONFLICT (subscription_id) DO UPDATE SET position = excluded.position, updated_at = excluded.updated_at " +
                "WHERE herald_checkpoints.position < excluded.position");
            _saveSnapshot = Prepare(
                "INSERT INTO herald_snapshots (stream, version, state_type, schema_version, state, created_at, created_offset) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) " +
                "ON CONFLICT (stream) DO UPDATE SET version = excluded.version, state_type = excluded.state_type, schema_version = excluded.schema_version, " +
                "state = excluded.state, created_at = excluded.created_at, created_offset = excluded.created_offset WHERE excluded.version >= herald_snapshots.version");
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    /// <summary>The highest position appended in the current transaction, 0 when none.</summary>
    public long LastAppendedPosition { get; private set; }

    /// <summary>The writer's connection, for an application's own statements in the same transaction.</summary>
    public SqliteConnection Connection => _connection;

    /// <summary>True between <see cref="Begin"/> and <see cref="Commit"/> or <see cref="Rollback"/>.</summary>
    public bool InTransaction { get; private set; }

    /// <summary>False once SQLite ended the transaction on its own after an error (SQLITE_FULL, an I/O error, ...).</summary>
    public bool TransactionOpen => SQLitePCL.raw.sqlite3_get_autocommit(_connection.Handle) == 0;

    /// <summary>
    /// Begins a write transaction, waiting for the write lock of another connection up to the busy timeout (then the busy
    /// <see cref="SqliteException"/>). While it waits it asks <paramref name="wanted"/> between short slices, and returns false
    /// with nothing begun once that says no write is wanted any more (its callers were cancelled).
    /// </summary>
    public bool Begin<TState>(Func<TState, bool> wanted, TState state)
    {
        var handle = _connection.Handle;
        var slice = Math.Min(BusySliceMilliseconds, _busyMilliseconds);
        SQLitePCL.raw.sqlite3_busy_timeout(handle, slice);
        try
        {
            // SQLite itself waits out each slice (in real time, as its busy timeout does), so slices add up to the timeout.
            var attempts = slice == 0 ? 1 : Math.Max(1, (_busyMilliseconds + slice - 1) / slice);
            for (var attempt = 1; ; attempt++)
            {
                try
                {
                    _begin.Execute();
                    break;
                }
                catch (SqliteException ex) when (ex.SqliteErrorCode == SQLitePCL.raw.SQLITE_BUSY && attempt < attempts)
                {
                    if (!wanted(state))
                    {
                        return false;
                    }
                }
            }
        }
        finally
        {
            SQLitePCL.raw.sqlite3_busy_timeout(handle, _busyMilliseconds);
        }

        InTransaction = true;
        _nextPosition = _lastPosition.ExecuteInt64()!.Value + 1;
        // As every engine keeps it (UTC, to the microsecond), so an event's RecordedAt reads back the same on each.
        _now = StoredTime.Of(_timeProvider.GetUtcNow()).UtcTicks;
        LastAppendedPosition = 0;
        return true;
    }

    /// <summary>Commits, unless the file is no longer where it was opened (then the caller rolls back).</summary>
    public void Commit()
    {
        SqliteFileGuard.ThrowIfMoved(_connection);
        _commit.Execute();
        InTransaction = false;
    }

    /// <summary>Rolls the transaction back; does nothing when SQLite already ended it after an error.</summary>
    public void Rollback()
    {
        InTransaction = false;
        LastAppendedPosition = 0;
        if (TransactionOpen)
        {
            _rollback.Execute();
        }
    }

    /// <summary>Marks a point the next write can be undone to without touching the others in the transaction.</summary>
    public void Savepoint()
    {
        _savepoint.Execute();
        _savedNextPosition = _nextPosition;
        _savedLastAppended = LastAppendedPosition;
    }

    public void ReleaseSavepoint() => _release.Execute();

    /// <summary>Undoes everything since <see cref="Savepoint"/> and ends the savepoint.</summary>
    public void RollbackToSavepoint()
    {
        _rollbackToSavepoint.Execute();
        _release.Execute();
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
            _insertStream.Bind(1, stream);
            _insertStream.Bind(2, category);
            streamId = _insertStream.ExecuteInt64()!.Value;
            version = 0;
        }

        var insert = _insertEvent;
        insert.Bind(2, streamId);
        insert.Bind(4, category);
        insert.Bind(17, _now);
        long position = 0;
        foreach (var envelope in events)
        {
            position = _nextPosition++;
            insert.Bind(1, position);
            insert.Bind(3, ++version);
            EnvelopeColumns.Bind(insert, 5, envelope);
            try
            {
                insert.Execute();
            }
            catch (SqliteException ex) when (ex.SqliteErrorCode == SqliteConstraint && FindVersionOf(streamId, envelope.MessageId) is { } stored)
            {
                // The unique (stream, event id) key caught an id this stream already has, past the batch's first event
                // (which was looked up above): a conflict. The caller undoes the rows inserted before it.
                throw new ConcurrencyException(stream, expected, current,
                    $"The event id {envelope.MessageId} is already stored at version {stored}, but not as part of the same append.");
            }
        }

        _updateStream.Bind(1, version);
        _updateStream.Bind(2, position);
        _updateStream.Bind(3, streamId);
        _updateStream.Execute();
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
            _deleteStream.Bind(1, found.Id);
            _deleteStream.Execute();
            _recordDeletion.Bind(1, found.Id);
            _recordDeletion.Bind(2, _now);
            _recordDeletion.Execute();
        }
    }

    public void SetCheckpoint(string subscriptionId, long position)
    {
        _setCheckpoint.Bind(1, subscriptionId);
        _setCheckpoint.Bind(2, position);
        _setCheckpoint.Bind(3, _now);
        _setCheckpoint.Execute();
    }

    /// <summary>Stores the position only when it moves the checkpoint forward; otherwise throws <see cref="CheckpointConflictException"/>.</summary>
    public void AdvanceCheckpoint(string subscriptionId, long position)
    {
        _advanceCheckpoint.Bind(1, subscriptionId);
        _advanceCheckpoint.Bind(2, position);
        _advanceCheckpoint.Bind(3, _now);
        _advanceCheckpoint.Execute();
        if (_advanceCheckpoint.Changes == 0)
        {
            throw new CheckpointConflictException(subscriptionId, position);
        }
    }

    public void SaveSnapshot(Snapshot snapshot)
    {
        _saveSnapshot.Bind(1, snapshot.Stream);
        _saveSnapshot.Bind(2, snapshot.Version);
        _saveSnapshot.Bind(3, snapshot.StateType);
        _saveSnapshot.Bind(4, snapshot.SchemaVersion);
        _saveSnapshot.Bind(5, snapshot.State.Span);
        EnvelopeColumns.BindTime(_saveSnapshot, 6, snapshot.CreatedAt);
        _saveSnapshot.Execute();
    }

    /// <summary>
    /// A statement of another part of the package (the reliability stores), prepared on first use and kept with this
    /// connection; the text must be one of the caller's constants.
    /// </summary>
    public RawStatement Statement(string sql)
    {
        if (!_byText.TryGetValue(sql, out var statement))
        {
            statement = Prepare(sql);
            _byText[sql] = statement;
        }

        return statement;
    }

    public void Dispose()
    {
        // Statements first: a connection closes only once its statements are finalized.
        foreach (var statement in _statements)
        {
            statement.Dispose();
        }

        _connection.Dispose();
    }

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
            throw new ConcurrencyException(stream, expected, row.Current,
                $"The event id {events[0].MessageId} is already stored at version {start}, not where this append would put it.");
        }

        long position = 0;
        for (var i = 0; i < events.Count; i++)
        {
            _eventAt.Bind(1, row.Id);
            _eventAt.Bind(2, start + i);
            if (!_eventAt.Step())
            {
                throw new ConcurrencyException(stream, expected, row.Current, "Some of the event ids were already appended, but not as this same batch.");
            }

            var sameId = new Guid(_eventAt.Blob(0), bigEndian: true) == events[i].MessageId;
            var sameContent = _eventAt.Blob(1).SequenceEqual(System.Text.Encoding.UTF8.GetBytes(events[i].MessageType)) && _eventAt.Blob(2).SequenceEqual(events[i].Body.Span);
            position = _eventAt.Int64(3);
            _eventAt.Reset();
            if (!sameId)
            {
                throw new ConcurrencyException(stream, expected, row.Current, "Some of the event ids were already appended, but not as this same batch.");
            }

            if (!sameContent)
            {
                throw new ConcurrencyException(stream, expected, row.Current, $"The event id {events[i].MessageId} is already stored with another type or body.");
            }
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

        _isDeletionPoint.Bind(1, streamId);
        _isDeletionPoint.Bind(2, version - 1);
        return _isDeletionPoint.ExecuteInt64() is null ? -1 : version;
    }

    private StreamRow? FindStream(string stream)
    {
        _findStream.Bind(1, stream);
        if (!_findStream.Step())
        {
            return null;
        }

        var row = new StreamRow(_findStream.Int64(0), _findStream.Int64(1), _findStream.Int64(2), _findStream.Int64(3));
        _findStream.Reset();
        return row;
    }

    private long? FindVersionOf(long streamId, Guid eventId)
    {
        Span<byte> id = stackalloc byte[16];
        eventId.TryWriteBytes(id, bigEndian: true, out _);
        _findEventId.Bind(1, streamId);
        _findEventId.Bind(2, id);
        return _findEventId.ExecuteInt64();
    }

    /// <summary>Prepares a statement on the writing connection, finalized with the session (the queue's statements use it too).</summary>
    public RawStatement Prepare(string sql)
    {
        var statement = new RawStatement(_connection, sql);
        _statements.Add(statement);
        return statement;
    }

    private readonly record struct StreamRow(long Id, long Version, long DeletedUpTo, long LastPosition)
    {
        public long Current => Version > DeletedUpTo ? Version : 0;
    }
}
