using Npgsql;

namespace Herald.Benchmarks.Scale;

/// <summary>What the server says about an events table and its own background work, read between steps (issue 16, appends).</summary>
internal sealed class PostgresProbe(NpgsqlDataSource admin, string schema)
{
    public async Task<Snapshot> ReadAsync(CancellationToken cancellationToken)
    {
        await using var command = admin.CreateCommand("""
            SELECT pg_relation_size(format('%I.events', $1::text)::regclass),
                   coalesce((SELECT sum(pg_relation_size(i.indexrelid)) FROM pg_stat_user_indexes i WHERE i.schemaname = $1 AND i.relname = 'events'), 0),
                   coalesce((SELECT pg_relation_size(i.indexrelid) FROM pg_stat_user_indexes i WHERE i.schemaname = $1 AND i.indexrelname = 'events_pkey'), 0),
                   coalesce((SELECT pg_relation_size(i.indexrelid) FROM pg_stat_user_indexes i WHERE i.schemaname = $1 AND i.indexrelname = 'events_stream_version'), 0),
                   coalesce((SELECT pg_relation_size(i.indexrelid) FROM pg_stat_user_indexes i WHERE i.schemaname = $1 AND i.indexrelname = 'events_event_id'), 0),
                   (SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter),
                   (SELECT buffers_checkpoint + buffers_clean + buffers_backend FROM pg_stat_bgwriter),
                   coalesce((SELECT sum(idx_blks_read) FROM pg_statio_user_indexes WHERE schemaname = $1 AND relname = 'events'), 0),
                   coalesce((SELECT sum(idx_blks_hit) FROM pg_statio_user_indexes WHERE schemaname = $1 AND relname = 'events'), 0),
                   coalesce((SELECT autovacuum_count + autoanalyze_count FROM pg_stat_user_tables WHERE schemaname = $1 AND relname = 'events'), 0),
                   pg_current_wal_lsn() - '0/0'::pg_lsn
            """);
        command.Parameters.Add(new NpgsqlParameter<string> { TypedValue = schema });
        await using var reader = await command.ExecuteReaderAsync(cancellationToken);
        await reader.ReadAsync(cancellationToken);
        return new Snapshot(
            reader.GetInt64(0), Convert.ToInt64(reader.GetValue(1), System.Globalization.CultureInfo.InvariantCulture), reader.GetInt64(2), reader.GetInt64(3), reader.GetInt64(4),
            reader.GetInt64(5), reader.GetInt64(6), Convert.ToInt64(reader.GetValue(7), System.Globalization.CultureInfo.InvariantCulture),
            Convert.ToInt64(reader.GetValue(8), System.Globalization.CultureInfo.InvariantCulture), reader.GetInt64(9), Convert.ToInt64(reader.GetValue(10), System.Globalization.CultureInfo.InvariantCulture));
    }

    /// <summary>Sizes in bytes; counters are cumulative (subtract two snapshots).</summary>
    internal sealed record Snapshot(
        long Heap, long Indexes, long PrimaryKey, long StreamVersion, long EventId,
        long Checkpoints, long BuffersWritten, long IndexBlocksRead, long IndexBlocksHit, long Autovacuums, long WalBytes);
}
