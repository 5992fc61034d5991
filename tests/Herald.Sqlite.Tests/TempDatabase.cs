using Microsoft.Data.Sqlite;

namespace Herald.Sqlite.Tests;

/// <summary>A database file under the temp directory with a unique name, deleted (with its WAL files and leaders' lock folder) when disposed.</summary>
public sealed class TempDatabase : IDisposable
{
    public TempDatabase()
    {
        Path = System.IO.Path.Combine(System.IO.Path.GetTempPath(), $"herald-sqlite-tests-{Guid.NewGuid():N}.db");
    }

    /// <summary>The file path (not created until a store opens it).</summary>
    public string Path { get; }

    /// <summary>Opens a plain connection to the file, to look at or tamper with it from outside the store.</summary>
    public SqliteConnection OpenRaw()
    {
        var connection = new SqliteConnection($"Data Source={Path};Pooling=False");
        connection.Open();
        return connection;
    }

    /// <summary>Runs a scalar query on a plain connection.</summary>
    public object? Scalar(string sql)
    {
        using var connection = OpenRaw();
        using var command = connection.CreateCommand();
        command.CommandText = sql;
        return command.ExecuteScalar();
    }

    public void Dispose() => Herald.Conformance.SqliteFiles.Delete(Path);
}
