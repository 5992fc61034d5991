using Herald.Conformance.Persistence;
using Herald.Hosting;
using Herald.Persistence;
using Microsoft.Extensions.DependencyInjection;

namespace Herald.Sqlite.Tests.Persistence;

/// <summary>The unit-of-work contract on a SQLite file, with the application's table written through <c>EnlistSqliteWrite</c>.</summary>
public sealed class SqliteUnitOfWorkConformanceTests : UnitOfWorkConformance, IDisposable
{
    private readonly TempDatabase _file = new();

    public void Dispose() => _file.Dispose();

    protected override void UseEngine(HeraldBuilder herald) => herald.UseSqlite(_file.Path);

    protected override ValueTask OnStartedAsync(IServiceProvider services)
    {
        _file.Scalar("CREATE TABLE IF NOT EXISTS app_rows (key TEXT PRIMARY KEY)");
        return ValueTask.CompletedTask;
    }

    protected override ValueTask WriteUserRowAsync(IUnitOfWork unitOfWork, string key)
    {
        unitOfWork.EnlistSqliteWrite(connection =>
        {
            using var insert = connection.CreateCommand();
            insert.CommandText = "INSERT INTO app_rows (key) VALUES ($key)";
            insert.Parameters.AddWithValue("$key", key);
            insert.ExecuteNonQuery();
        });
        return ValueTask.CompletedTask;
    }

    protected override ValueTask<bool> UserRowExistsAsync(IServiceProvider services, string key) =>
        ValueTask.FromResult(Convert.ToInt64(_file.Scalar($"SELECT COUNT(*) FROM app_rows WHERE key = '{key}'"), System.Globalization.CultureInfo.InvariantCulture) == 1);
}
