using Npgsql;

namespace Herald.Postgres.Internal;

/// <summary>
/// Keeps a scan's plan independent of statistics. Without fresh statistics (a new table, a bulk import, a log or backlog that
/// grew since the last <c>ANALYZE</c>) PostgreSQL guesses a range or an equality matches a few hundred rows, and then reads
/// every row after the position (a bitmap heap scan) and sorts them to keep one page: a page then costs time in proportion to
/// the whole tail. Sent first in the statement's batch (one implicit transaction), this turns off sequential scans, bitmap
/// scans and sorts for that transaction only, so the planner walks the index that gives the order and stops after the page.
/// Where no such index exists the planner still falls back to the disabled plan; nothing is refused.
/// </summary>
internal static class PlannerGuard
{
    /// <summary>The settings, local to the transaction (<c>set_config(..., true)</c>).</summary>
    public const string Sql =
        "SELECT set_config('enable_seqscan', 'off', true), set_config('enable_bitmapscan', 'off', true), set_config('enable_sort', 'off', true)";

    /// <summary>A batch of the guard followed by <paramref name="sql"/> with its parameters (the batch's second command).</summary>
    public static NpgsqlBatch Batch(NpgsqlConnection connection, string sql, IEnumerable<NpgsqlParameter> parameters)
    {
        var batch = new NpgsqlBatch(connection);
        batch.BatchCommands.Add(new NpgsqlBatchCommand(Sql));
        var command = new NpgsqlBatchCommand(sql);
        foreach (var parameter in parameters)
        {
            command.Parameters.Add(parameter);
        }

        batch.BatchCommands.Add(command);
        return batch;
    }

    /// <summary>Runs a batch made by <see cref="Batch"/> and returns its reader positioned on the statement's rows.</summary>
    public static async Task<NpgsqlDataReader> ExecuteReaderAsync(NpgsqlBatch batch, CancellationToken cancellationToken)
    {
        var reader = await batch.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            await reader.NextResultAsync(cancellationToken).ConfigureAwait(false);
            return reader;
        }
        catch
        {
            await reader.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }
}
