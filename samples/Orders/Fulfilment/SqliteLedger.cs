using Herald.Persistence;
using Herald.Sqlite;
using Microsoft.Data.Sqlite;

namespace Orders.Fulfilment;

/// <summary>The services' tables in the SQLite file of Herald's stores; writes run on Herald's single writer at the commit.</summary>
public sealed class SqliteLedger(string path) : Ledger
{
    public override async Task<IReadOnlyDictionary<string, long>> PaymentsByInstanceAsync(CancellationToken cancellationToken)
    {
        await using var connection = new SqliteConnection(_connectionString);
        await connection.OpenAsync(cancellationToken);
        await using var command = connection.CreateCommand();
        command.CommandText = Render(ByInstanceSql);
        return await ReadByInstanceAsync(command, cancellationToken);
    }

    private readonly string _connectionString = new SqliteConnectionStringBuilder { DataSource = path, Pooling = false, DefaultTimeout = 30 }.ToString();

    public override async Task EnsureSchemaAsync(CancellationToken cancellationToken)
    {
        await using var connection = new SqliteConnection(_connectionString);
        await connection.OpenAsync(cancellationToken);
        await using var command = connection.CreateCommand();
        command.CommandText = "PRAGMA busy_timeout = 30000; PRAGMA journal_mode = WAL;" + Render(Schema);
        await command.ExecuteNonQueryAsync(cancellationToken);
    }

    public override ValueTask ExecuteAsync(IUnitOfWork unitOfWork, string sql, IReadOnlyDictionary<string, object?> parameters, CancellationToken cancellationToken)
    {
        var text = Render(sql);
        unitOfWork.EnlistSqliteWrite(connection =>
        {
            using var command = connection.CreateCommand();
            command.CommandText = text;
            foreach (var (name, value) in parameters)
            {
                command.Parameters.AddWithValue("@" + name, value ?? DBNull.Value);
            }

            command.ExecuteNonQuery();
        });
        return ValueTask.CompletedTask;
    }

    public override async Task<LedgerCounts> CountAsync(Guid? orderId, CancellationToken cancellationToken)
    {
        await using var connection = new SqliteConnection(_connectionString);
        await connection.OpenAsync(cancellationToken);
        await using var command = connection.CreateCommand();
        command.CommandText = Render(CountSql).Replace("{filter}", orderId is null ? "1 = 1" : "order_id = @order", StringComparison.Ordinal);
        command.Parameters.AddWithValue("@order", orderId?.ToString() ?? string.Empty);
        await using var reader = await command.ExecuteReaderAsync(cancellationToken);
        await reader.ReadAsync(cancellationToken);
        return ReadCounts(reader);
    }

    private static string Render(string sql) => sql.Replace("{prefix}", "sample_", StringComparison.Ordinal).Replace("{int}", "INTEGER", StringComparison.Ordinal);
}
