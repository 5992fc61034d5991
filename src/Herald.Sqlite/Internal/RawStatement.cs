using Microsoft.Data.Sqlite;
using SQLitePCL;

namespace Herald.Sqlite.Internal;

/// <summary>
/// A statement prepared once on the writer's connection and bound by index. The write path runs several statements per
/// append inside one transaction; Microsoft.Data.Sqlite binds parameters by name and builds a data reader on every
/// execution, and going through its own native layer (SQLitePCLRaw, which it ships with) instead makes a grouped single-event
/// append and a 100-event batch about twice as fast. Errors surface as <see cref="SqliteException"/> like any other; waits
/// for a lock held elsewhere are SQLite's busy_timeout, set on the connection.
/// </summary>
internal sealed class RawStatement : IDisposable, IColumnReader
{
    private readonly sqlite3 _db;
    private readonly sqlite3_stmt _statement;

    public RawStatement(SqliteConnection connection, string sql)
    {
        _db = connection.Handle!;
        var rc = raw.sqlite3_prepare_v2(_db, sql, out _statement);
        SqliteException.ThrowExceptionForRC(rc, _db);
    }

    public void Bind(int index, long value) => Check(raw.sqlite3_bind_int64(_statement, index, value));

    public void Bind(int index, string? value) => Check(value is null ? raw.sqlite3_bind_null(_statement, index) : raw.sqlite3_bind_text(_statement, index, value));

    /// <summary>Binds NULL.</summary>
    public void BindNull(int index) => Check(raw.sqlite3_bind_null(_statement, index));

    /// <summary>Binds a number, or NULL when there is none.</summary>
    public void Bind(int index, long? value) => Check(value is { } number ? raw.sqlite3_bind_int64(_statement, index, number) : raw.sqlite3_bind_null(_statement, index));

    /// <summary>Binds bytes; an empty span binds an empty blob (never NULL).</summary>
    public void Bind(int index, ReadOnlySpan<byte> value) =>
        Check(value.IsEmpty ? raw.sqlite3_bind_zeroblob(_statement, index, 0) : raw.sqlite3_bind_blob(_statement, index, value));

    /// <summary>Runs the statement to completion (rows are ignored) and resets it for the next use.</summary>
    public void Execute()
    {
        while (Step())
        {
        }
    }

    /// <summary>Runs the statement and returns the first column of its first row, or null when it returns none.</summary>
    public long? ExecuteInt64()
    {
        long? value = Step() ? Int64(0) : null;
        Reset();
        return value;
    }

    /// <summary>Advances to the next row: true with a row to read, false when done (the statement is then reset). Throws on an error, reset too.</summary>
    public bool Step()
    {
        var rc = raw.sqlite3_step(_statement);
        if (rc == raw.SQLITE_ROW)
        {
            return true;
        }

        if (rc == raw.SQLITE_DONE)
        {
            raw.sqlite3_reset(_statement);
            return false;
        }

        // Read the message before the reset, which may replace it.
        var error = new SqliteException(raw.sqlite3_errmsg(_db).utf8_to_string(), rc, raw.sqlite3_extended_errcode(_db));
        raw.sqlite3_reset(_statement);
        throw error;
    }

    /// <summary>Ends a read before its last row, so the statement can run again.</summary>
    public void Reset() => raw.sqlite3_reset(_statement);

    /// <summary>Rows the last finished INSERT, UPDATE or DELETE on this connection changed.</summary>
    public int Changes => raw.sqlite3_changes(_db);

    public bool IsNull(int column) => raw.sqlite3_column_type(_statement, column) == raw.SQLITE_NULL;

    public long Int64(int column) => raw.sqlite3_column_int64(_statement, column);

    public string Text(int column) => raw.sqlite3_column_text(_statement, column).utf8_to_string();

    public ReadOnlySpan<byte> Blob(int column) => raw.sqlite3_column_blob(_statement, column);

    public byte[] Bytes(int column) => Blob(column).ToArray();

    public Guid Guid(int column) => new(Blob(column), bigEndian: true);

    public void Dispose() => _statement.Dispose();

    private void Check(int rc)
    {
        if (rc != raw.SQLITE_OK)
        {
            SqliteException.ThrowExceptionForRC(rc, _db);
        }
    }
}
