using Herald.Persistence;
using Herald.Postgres;
using Npgsql;

namespace Orders.Fulfilment;

/// <summary>The services' tables in Herald's PostgreSQL schema; writes go through the unit of work's transaction.</summary>
public sealed class PostgresLedger(NpgsqlDataSource dataSource, string schema) : Ledger
{
    public override async Task EnsureSchemaAsync(CancellationToken cancellationToken)
    {
        await using var connection = await dataSource.OpenConnectionAsync(cancellationToken);
        await using var transaction = await connection.BeginTransactionAsync(cancellationToken);
        // Two instances starting together must not race on CREATE TABLE IF NOT EXISTS (it is not atomic in PostgreSQL).
        await using (var command = new NpgsqlCommand($"SELECT pg_advisory_xact_lock(hashtext('orders-sample:{schema}')); CREATE SCHEMA IF NOT EXISTS \"{schema}\";" + Render(Schema), connection, transaction))
        {
            await command.ExecuteNonQueryAsync(cancellationToken);
        }

        await transaction.CommitAsync(cancellationToken);
    }

    public override async ValueTask ExecuteAsync(IUnitOfWork unitOfWork, string sql, IReadOnlyDictionary<string, object?> parameters, CancellationToken cancellationToken)
    {
        var transaction = await unitOfWork.GetNpgsqlTransactionAsync(cancellationToken);
        await using var command = new NpgsqlCommand(Render(sql), transaction.Connection, transaction);
        foreach (var (name, value) in parameters)
        {
            command.Parameters.AddWithValue(name, value ?? DBNull.Value);
        }

        await command.ExecuteNonQueryAsync(cancellationToken);
    }

    public override async Task<LedgerCounts> CountAsync(Guid? orderId, CancellationToken cancellationToken)
    {
        await using var command = dataSource.CreateCommand(Render(CountSql).Replace("{filter}", orderId is null ? "TRUE" : "order_id = @order", StringComparison.Ordinal));
        command.Parameters.AddWithValue("order", orderId?.ToString() ?? string.Empty);
        await using var reader = await command.ExecuteReaderAsync(cancellationToken);
        await reader.ReadAsync(cancellationToken);
        return ReadCounts(reader);
    }

    public override async Task<IReadOnlyDictionary<string, long>> PaymentsByInstanceAsync(CancellationToken cancellationToken)
    {
        await using var command = dataSource.CreateCommand(Render(ByInstanceSql));
        return await ReadByInstanceAsync(command, cancellationToken);
    }

    private string Render(string sql) => sql.Replace("{prefix}", $"\"{schema}\".sample_", StringComparison.Ordinal).Replace("{int}", "BIGINT", StringComparison.Ordinal);
}
