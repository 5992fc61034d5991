using Herald.Postgres.Internal;
using Npgsql;

namespace Herald.Postgres.EventSourcing;

// The reliability and saga stores run most statements alone: each on a pooled connection of its own, opened once the
// schema is current and given back as soon as the statement is done. These are that shape, written once. Statements that scan
// (lists, counts, deletes of a page) run behind the PlannerGuard, so their plan does not depend on statistics.
internal sealed partial class PostgresEventStore
{
    /// <summary>Runs one statement alone and returns the number of rows it affected.</summary>
    internal async ValueTask<int> ExecuteAloneAsync(string sql, NpgsqlParameter[] parameters, CancellationToken cancellationToken)
    {
        await using var connection = await OpenStartedAsync(cancellationToken).ConfigureAwait(false);
        await using var command = AloneCommand(sql, parameters, connection);
        return await command.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
    }

    /// <summary>
    /// Runs one idempotent statement alone, as <see cref="ExecuteAloneAsync"/>, once more on a new connection when the pooled
    /// connection it got had been cut: a failover, an idle timeout or a proxy restart ends the pool's idle sessions, and the
    /// pool only learns of it on their next use. The pool is cleared first, so the retry does not meet another session cut
    /// with the first. <paramref name="parameters"/> makes the statement's parameters (a parameter belongs to one command).
    /// </summary>
    internal async ValueTask<int> ExecuteIdempotentAloneAsync(string sql, Func<NpgsqlParameter[]> parameters, CancellationToken cancellationToken)
    {
        var connection = await OpenStartedAsync(cancellationToken).ConfigureAwait(false);
        await using (connection.ConfigureAwait(false))
        {
            try
            {
                await using var command = AloneCommand(sql, parameters(), connection);
                return await command.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
            }
            catch (NpgsqlException ex) when (connection.State != System.Data.ConnectionState.Open && !cancellationToken.IsCancellationRequested)
            {
                Log.PooledConnectionCut(_logger, ex);
                _dataSource.Clear();
            }
        }

        return await ExecuteAloneAsync(sql, parameters(), cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Runs one statement that scans for its rows (a page to delete) behind the planner guard; returns the rows it affected.</summary>
    internal async ValueTask<int> ExecuteGuardedAloneAsync(string sql, NpgsqlParameter[] parameters, CancellationToken cancellationToken)
    {
        await using var connection = await OpenStartedAsync(cancellationToken).ConfigureAwait(false);
        await using var batch = PlannerGuard.Batch(connection, sql, parameters);
        await batch.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
        return batch.BatchCommands[1].RecordsAffected;
    }

    /// <summary>Runs one statement alone, behind the planner guard, that always returns a value (a count, an EXISTS) and returns it.</summary>
    internal async ValueTask<T> ScalarAloneAsync<T>(string sql, NpgsqlParameter[] parameters, CancellationToken cancellationToken)
    {
        await using var connection = await OpenStartedAsync(cancellationToken).ConfigureAwait(false);
        await using var batch = PlannerGuard.Batch(connection, sql, parameters);
        await using var reader = await PlannerGuard.ExecuteReaderAsync(batch, cancellationToken).ConfigureAwait(false);
        await reader.ReadAsync(cancellationToken).ConfigureAwait(false);
        return reader.GetFieldValue<T>(0);
    }

    /// <summary>Runs one query alone and returns its first row read by <paramref name="read"/>, or null when it has none.</summary>
    internal async ValueTask<T?> QueryFirstAloneAsync<T>(string sql, NpgsqlParameter[] parameters, Func<NpgsqlDataReader, T> read, CancellationToken cancellationToken)
        where T : class
    {
        await using var connection = await OpenStartedAsync(cancellationToken).ConfigureAwait(false);
        await using var command = AloneCommand(sql, parameters, connection);
        await using var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
        return await reader.ReadAsync(cancellationToken).ConfigureAwait(false) ? read(reader) : null;
    }

    /// <summary>Runs one query alone, behind the planner guard, and returns every row read by <paramref name="read"/>.</summary>
    internal async ValueTask<List<T>> QueryAloneAsync<T>(string sql, NpgsqlParameter[] parameters, Func<NpgsqlDataReader, T> read, CancellationToken cancellationToken)
    {
        await using var connection = await OpenStartedAsync(cancellationToken).ConfigureAwait(false);
        await using var batch = PlannerGuard.Batch(connection, sql, parameters);
        await using var reader = await PlannerGuard.ExecuteReaderAsync(batch, cancellationToken).ConfigureAwait(false);
        var rows = new List<T>();
        while (await reader.ReadAsync(cancellationToken).ConfigureAwait(false))
        {
            rows.Add(read(reader));
        }

        return rows;
    }

    private static NpgsqlCommand AloneCommand(string sql, NpgsqlParameter[] parameters, NpgsqlConnection connection)
    {
        var command = new NpgsqlCommand(sql, connection);
        foreach (var parameter in parameters)
        {
            command.Parameters.Add(parameter);
        }

        return command;
    }
}
