using Microsoft.Data.Sqlite;

namespace Herald.Sqlite.Internal;

/// <summary>Runs a bound query and maps its rows, so the stores write only their row mapping.</summary>
internal static class CommandRows
{
    /// <summary>Every row of the query, mapped by <paramref name="read"/>, in the query's order.</summary>
    public static List<T> ReadAll<T>(this SqliteCommand command, Func<SqliteDataReader, T> read)
    {
        using var rows = command.ExecuteReader();
        var list = new List<T>();
        while (rows.Read())
        {
            list.Add(read(rows));
        }

        return list;
    }

    /// <summary>The first row of the query mapped by <paramref name="read"/>, or null when there is none.</summary>
    public static T? ReadFirst<T>(this SqliteCommand command, Func<SqliteDataReader, T> read)
        where T : class
    {
        using var rows = command.ExecuteReader();
        return rows.Read() ? read(rows) : null;
    }
}
