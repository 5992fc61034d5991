using Herald.Sqlite.Persistence;
using Herald.Persistence;
using Herald.Sqlite.Reliability;
using Microsoft.Data.Sqlite;

namespace Herald.Sqlite;

/// <summary>The application's own tables in Herald's SQLite unit of work.</summary>
public static class SqliteUnitOfWorkExtensions
{
    /// <summary>
    /// Adds the application's own statements to the unit of work. <paramref name="write"/> runs at the commit, on the store's
    /// single writer, in the same transaction as the events, outbox rows and inbox mark: all commit together, and an
    /// exception it throws fails the commit and undoes every one of them. Create commands on the connection it is given and
    /// do not keep it.
    /// </summary>
    public static void EnlistSqliteWrite(this IUnitOfWork unitOfWork, Action<SqliteConnection> write)
    {
        ArgumentNullException.ThrowIfNull(unitOfWork);
        ArgumentNullException.ThrowIfNull(write);
        var own = unitOfWork as SqliteUnitOfWork
            ?? throw new ArgumentException($"Only Herald's SQLite unit of work (UseSqlite) runs SQLite statements, not a {unitOfWork.GetType().Name}.", nameof(unitOfWork));
        own.Enlist(session => write(session.Connection));
    }
}
