using System.Globalization;
using Herald.EventSourcing;
using Herald.Postgres.Schema;

namespace Herald.Postgres.EventSourcing;

/// <summary>The event store's statements for one schema and position offset, built once at start.</summary>
internal sealed class EventStoreSql
{
    /// <summary>The columns every event read returns, in the order <see cref="EventRows.Read"/> expects.</summary>
    private const string EventColumns =
        "e.position, e.stream, e.version, e.event_id, e.type, e.schema_version, e.time, e.correlation_id, e.causation_id, " +
        "e.user_id, e.partition_key, e.content_type, e.headers, e.body, e.recorded_at";

    private readonly string[] _readAll = new string[4];

    public EventStoreSql(string schema, long positionOffset)
    {
        var s = Migrations.Quote(schema);
        Schema = schema;
        PositionOffset = positionOffset;
        Channel = Migrations.ChannelFor(schema);

        // Everything below this bound was written by transactions that have ended (committed or rolled back), so the set of
        // readable rows below it can no longer change (ADR 0001). One snapshot per statement: bound and rows agree.
        var bound = $"((pg_snapshot_xmin(pg_current_snapshot())::text::bigint + {positionOffset.ToString(CultureInfo.InvariantCulture)}) << 20)";

        Append = $"SELECT o_status, o_version, o_position, o_detail FROM {s}.append_events($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20)";
        Delete = $"SELECT o_status, o_actual FROM {s}.delete_stream($1, $2)";
        Notify = $"SELECT pg_notify('{Channel}', '')";

        // Its own transaction holds nothing a crash could lose but the wake-up (listeners also poll), so it does not wait
        // for its WAL flush.
        NotifyAfterCommit = $"SELECT set_config('synchronous_commit', 'off', true), pg_notify('{Channel}', '')";
        StreamState = $"SELECT CASE WHEN version > deleted_up_to THEN version ELSE 0 END, last_position FROM {s}.streams WHERE stream = $1";
        Head = $"""
            SELECT h.bound,
                   coalesce((SELECT max(e.position) FROM {s}.events e WHERE e.position < h.bound), 0),
                   (SELECT e.position FROM {s}.events e WHERE e.position >= h.bound ORDER BY e.position LIMIT 1) IS NOT NULL
              FROM (SELECT {bound} AS bound) h
            """;
        for (var shape = 0; shape < 4; shape++)
        {
            var category = (shape & 1) != 0 ? " AND e.category = $3" : "";
            var types = (shape & 2) != 0 ? (shape & 1) != 0 ? " AND e.type = ANY ($4)" : " AND e.type = ANY ($3)" : "";
            _readAll[shape] = $"""
                SELECT h.bound, {EventColumns}
                  FROM (SELECT {bound} AS bound) h
                  LEFT JOIN LATERAL (
                      SELECT e.* FROM {s}.events e
                       WHERE e.position > $1 AND e.position < h.bound AND NOT e.deleted{category}{types}
                       ORDER BY e.position LIMIT $2) e ON true
                """;
        }

        ReadStreamForward = $"SELECT {EventColumns} FROM {s}.events e WHERE e.stream = $1 AND e.version >= $2 AND NOT e.deleted ORDER BY e.version LIMIT $3";
        ReadStreamBackward = $"SELECT {EventColumns} FROM {s}.events e WHERE e.stream = $1 AND e.version <= $2 AND NOT e.deleted ORDER BY e.version DESC LIMIT $3";
        GetCheckpoint = $"SELECT position FROM {s}.checkpoints WHERE subscription_id = $1";
        SetCheckpoint = $"""
            INSERT INTO {s}.checkpoints (subscription_id, position, updated_at) VALUES ($1, $2, $3)
            ON CONFLICT (subscription_id) DO UPDATE SET position = excluded.position, updated_at = excluded.updated_at
            """;
        AdvanceCheckpoint = $"""
            INSERT INTO {s}.checkpoints AS old (subscription_id, position, updated_at) VALUES ($1, $2, $3)
            ON CONFLICT (subscription_id) DO UPDATE SET position = excluded.position, updated_at = excluded.updated_at
            WHERE old.position < excluded.position
            """;
        LoadSnapshot = $"SELECT version, state_type, schema_version, state, created_at FROM {s}.snapshots WHERE stream = $1";
        SaveSnapshot = $"""
            INSERT INTO {s}.snapshots AS old (stream, version, state_type, schema_version, state, created_at) VALUES ($1, $2, $3, $4, $5, $6)
            ON CONFLICT (stream) DO UPDATE
               SET version = excluded.version, state_type = excluded.state_type, schema_version = excluded.schema_version,
                   state = excluded.state, created_at = excluded.created_at
             WHERE old.version <= excluded.version
            """;
    }

    public string Schema { get; }

    public long PositionOffset { get; }

    public string Channel { get; }

    /// <summary>One call of the append function for several streams (see <see cref="AppendCall"/>); a row per member, in order.</summary>
    public string Append { get; }

    public string Delete { get; }

    /// <summary>Wakes the schema's listeners (at commit, when run inside a transaction).</summary>
    public string Notify { get; }

    /// <summary>Wakes the schema's listeners from a transaction of its own, run right after a grouped commit.</summary>
    public string NotifyAfterCommit { get; }

    public string StreamState { get; }

    /// <summary>The visibility bound, the highest readable position and whether committed events wait above the bound.</summary>
    public string Head { get; }

    public string ReadStreamForward { get; }

    public string ReadStreamBackward { get; }

    public string GetCheckpoint { get; }

    public string SetCheckpoint { get; }

    /// <summary>Stores a checkpoint only forward (a unit of work's): no row changes when it is at or past the position.</summary>
    public string AdvanceCheckpoint { get; }

    public string LoadSnapshot { get; }

    public string SaveSnapshot { get; }

    /// <summary>A page of <c>$all</c>: $1 after position, $2 limit, then $3 category and/or the type list, as the filter needs.</summary>
    public string ReadAll(EventFilter? filter) =>
        _readAll[(filter?.Category is null ? 0 : 1) | (filter?.EventTypes is null ? 0 : 2)];
}
