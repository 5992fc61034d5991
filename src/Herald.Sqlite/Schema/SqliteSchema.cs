using Microsoft.Data.Sqlite;

namespace Herald.Sqlite.Schema;

/// <summary>
/// The versioned schema of the Herald tables in one SQLite file. Each migration runs once, in order, in the same transaction
/// that records it in <c>herald_schema</c>, so a crash or a concurrent start never leaves a half-applied version.
/// </summary>
internal static class SqliteSchema
{
    /// <summary>The migrations in order; a migration is never edited once released, a change is a new one.</summary>
    public static IReadOnlyList<Migration> Migrations { get; } =
    [
        new(1, "event store, checkpoints and snapshots", $$"""
            CREATE TABLE herald_streams (
                stream_id     INTEGER PRIMARY KEY,
                name          TEXT    NOT NULL UNIQUE,
                category      TEXT    NOT NULL,
                version       INTEGER NOT NULL,
                deleted_up_to INTEGER NOT NULL DEFAULT 0,
                last_position INTEGER NOT NULL
            ) STRICT;

            CREATE TABLE herald_events (
                position       INTEGER PRIMARY KEY,
                stream_id      INTEGER NOT NULL REFERENCES herald_streams (stream_id),
                version        INTEGER NOT NULL,
                category       TEXT    NOT NULL,
            {{EnvelopeColumns("event", 15)}},
                recorded_at    INTEGER NOT NULL,
                UNIQUE (stream_id, version),
                UNIQUE (stream_id, event_id)
            ) STRICT;
            CREATE INDEX herald_events_by_category ON herald_events (category, position);

            CREATE TABLE herald_stream_deletions (
                stream_id  INTEGER NOT NULL REFERENCES herald_streams (stream_id),
                version    INTEGER NOT NULL,
                deleted_at INTEGER NOT NULL,
                PRIMARY KEY (stream_id, version)
            ) STRICT, WITHOUT ROWID;

            CREATE TABLE herald_checkpoints (
                subscription_id TEXT    NOT NULL PRIMARY KEY,
                position        INTEGER NOT NULL,
                updated_at      INTEGER NOT NULL
            ) STRICT, WITHOUT ROWID;

            CREATE TABLE herald_snapshots (
                stream         TEXT    NOT NULL PRIMARY KEY,
                version        INTEGER NOT NULL,
                state_type     TEXT    NOT NULL,
                schema_version INTEGER NOT NULL,
                state          BLOB    NOT NULL,
                created_at     INTEGER NOT NULL,
                created_offset INTEGER NOT NULL
            ) STRICT;
            """),
        new(2, "reliability: dead letters, outbox, inbox, idempotency", $$"""
            CREATE TABLE herald_dead_letters (
                id                   BLOB    NOT NULL PRIMARY KEY,
            {{DeadLetterFailureColumns}}
            {{EnvelopeColumns("message", 17)}},
                delivery_attempt INTEGER NOT NULL
            ) STRICT;
            CREATE INDEX herald_dead_letters_by_endpoint ON herald_dead_letters (endpoint, id);

            CREATE TABLE herald_outbox (
                seq                  INTEGER PRIMARY KEY,
                id                   BLOB    NOT NULL UNIQUE,
                destination_kind     TEXT    NOT NULL,
                destination          TEXT    NOT NULL,
                created_at           INTEGER NOT NULL,
                created_offset       INTEGER NOT NULL,
                outbox_partition_key TEXT,
                deliver_at           INTEGER,
                deliver_offset       INTEGER,
                sent_at              INTEGER,
                sent_offset          INTEGER,
            {{EnvelopeColumns("message", 17)}},
                delivery_attempt INTEGER NOT NULL
            ) STRICT;
            CREATE INDEX herald_outbox_pending ON herald_outbox (seq) WHERE sent_at IS NULL;
            CREATE INDEX herald_outbox_sent ON herald_outbox (sent_at) WHERE sent_at IS NOT NULL;

            CREATE TABLE herald_inbox (
                endpoint   TEXT    NOT NULL,
                message_id BLOB    NOT NULL,
                expires_at INTEGER NOT NULL,
                PRIMARY KEY (endpoint, message_id)
            ) STRICT, WITHOUT ROWID;
            CREATE INDEX herald_inbox_by_expiry ON herald_inbox (expires_at);

            CREATE TABLE herald_idempotency (
                idempotency_key TEXT    NOT NULL PRIMARY KEY,
                lock_token      BLOB    NOT NULL,
                completed       INTEGER NOT NULL,
                result          BLOB,
                expires_at      INTEGER NOT NULL
            ) STRICT, WITHOUT ROWID;
            CREATE INDEX herald_idempotency_by_expiry ON herald_idempotency (expires_at);
            """),
        new(3, "durable local queue", $$"""
            CREATE TABLE herald_queue_messages (
                id             INTEGER PRIMARY KEY,
                queue          TEXT    NOT NULL,
                visible_at     INTEGER NOT NULL,
                attempts       INTEGER NOT NULL,
                lease_owner    TEXT,
                lease_until    INTEGER,
            {{EnvelopeColumns("message", 15)}},
                enqueued_at    INTEGER NOT NULL
            ) STRICT;
            CREATE INDEX herald_queue_messages_due ON herald_queue_messages (queue, visible_at);
            CREATE INDEX herald_queue_messages_by_key ON herald_queue_messages (queue, partition_key, id) WHERE partition_key IS NOT NULL;
            CREATE INDEX herald_queue_messages_by_owner ON herald_queue_messages (lease_owner) WHERE lease_owner IS NOT NULL;

            CREATE TABLE herald_queue_bindings (
                topic    TEXT    NOT NULL,
                queue    TEXT    NOT NULL,
                bound_at INTEGER NOT NULL,
                PRIMARY KEY (topic, queue)
            ) STRICT, WITHOUT ROWID;

            CREATE TABLE herald_queue_dead_letters (
                id               INTEGER PRIMARY KEY,
                queue            TEXT    NOT NULL,
                delivery_attempt INTEGER NOT NULL,
                reason           TEXT    NOT NULL,
                dead_lettered_at INTEGER NOT NULL,
            {{EnvelopeColumns("message", 17)}},
                enqueued_at      INTEGER NOT NULL
            ) STRICT;
            CREATE INDEX herald_queue_dead_letters_by_queue ON herald_queue_dead_letters (queue, id);
            """),
        new(4, "outbox: failed attempts and a back-off per row", """
            ALTER TABLE herald_outbox ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
            ALTER TABLE herald_outbox ADD COLUMN next_attempt_at INTEGER;
            CREATE INDEX herald_outbox_waiting ON herald_outbox (outbox_partition_key, seq) WHERE sent_at IS NULL AND next_attempt_at IS NOT NULL;
            """),
        new(5, "saga instances", """
            CREATE TABLE herald_sagas (
                saga_type       TEXT    NOT NULL,
                id              TEXT    NOT NULL,
                status          TEXT    NOT NULL,
                state           TEXT,
                current_step    INTEGER NOT NULL,
                completed_steps TEXT    NOT NULL,
                data            BLOB    NOT NULL,
                error           TEXT,
                created_at      INTEGER NOT NULL,
                updated_at      INTEGER NOT NULL,
                version         INTEGER NOT NULL,
                PRIMARY KEY (saga_type, id)
            ) STRICT, WITHOUT ROWID;
            CREATE INDEX herald_sagas_by_status ON herald_sagas (status, saga_type, id);
            """),
        new(6, "read models: the active generation of each table", """
            CREATE TABLE herald_read_models (
                table_name        TEXT    NOT NULL PRIMARY KEY,
                active_generation INTEGER NOT NULL CHECK (active_generation >= 1),
                activated_at      INTEGER NOT NULL
            ) STRICT, WITHOUT ROWID;
            """),
        new(7, "saga instances: the timeouts a state machine's instance holds", """
            ALTER TABLE herald_sagas ADD COLUMN timeouts TEXT;
            """),

        // Issue 16: counting an endpoint's dead letters read all of its rows. Triggers keep a count per endpoint in the
        // statement that inserts or deletes a row (an ignored duplicate fires nothing), so every writer keeps it exact and a
        // count reads one row. The backfill runs in the migration's write transaction, so no row escapes both.
        new(8, "dead letters: a count per endpoint kept by triggers", $$"""
            CREATE TABLE herald_dead_letter_counts (
                endpoint TEXT    NOT NULL PRIMARY KEY,
                count    INTEGER NOT NULL
            ) STRICT, WITHOUT ROWID;

            {{DeadLetterCountTriggers}}

            INSERT INTO herald_dead_letter_counts (endpoint, count)
                SELECT endpoint, COUNT(*) FROM herald_dead_letters GROUP BY endpoint;
            """),

        // Issue 16: a page of one endpoint's dead letters read its rows through the (endpoint, id) index, each row a lookup of
        // its rowid somewhere in the table, a page read per row once the endpoint's rows were spread over a table larger than
        // the cache (20 pages of 100 fell from 163k to 45k rows/s between 100 k and 10 M rows). The table is now clustered by
        // (endpoint, id): a page is a range of the table itself, a few leaf pages per 100 rows at any size. Ids stay unique by
        // their own index, which a lookup or a delete by id, and a listing of every endpoint, go through. The copy keeps every
        // row (the counts of migration 8 stay exact); the triggers of migration 8 go with the old table and are made again.
        new(9, "dead letters: the table clustered by endpoint and id", $$"""
            CREATE TABLE herald_dead_letters_clustered (
                id                   BLOB    NOT NULL,
            {{DeadLetterFailureColumns}}
            {{EnvelopeColumns("message", 17)}},
                delivery_attempt INTEGER NOT NULL,
                PRIMARY KEY (endpoint, id)
            ) STRICT, WITHOUT ROWID;

            INSERT INTO herald_dead_letters_clustered
                SELECT id, endpoint, cause, error_type, error_message, stack_trace, fingerprint, first_failure, first_failure_offset,
                       last_failure, last_failure_offset, attempt_count, retry_count, last_retry_error, last_retry_time, last_retry_offset,
                       message_id, message_type, schema_version, time, time_offset, correlation_id, causation_id, user_id, partition_key,
                       content_type, headers, body, delivery_attempt
                  FROM herald_dead_letters ORDER BY endpoint, id;
            DROP TABLE herald_dead_letters;
            ALTER TABLE herald_dead_letters_clustered RENAME TO herald_dead_letters;
            CREATE UNIQUE INDEX herald_dead_letters_by_id ON herald_dead_letters (id);

            {{DeadLetterCountTriggers}}
            """),
    ];

    // The triggers of migration 8 that keep herald_dead_letter_counts exact; migration 9 makes them again on the rebuilt table.
    private const string DeadLetterCountTriggers = """
        CREATE TRIGGER herald_dead_letters_counted_insert AFTER INSERT ON herald_dead_letters
        BEGIN
            INSERT INTO herald_dead_letter_counts (endpoint, count) VALUES (NEW.endpoint, 1)
                ON CONFLICT (endpoint) DO UPDATE SET count = count + 1;
        END;

        CREATE TRIGGER herald_dead_letters_counted_delete AFTER DELETE ON herald_dead_letters
        BEGIN
            UPDATE herald_dead_letter_counts SET count = count - 1 WHERE endpoint = OLD.endpoint;
        END;

        CREATE TRIGGER herald_dead_letters_counted_move AFTER UPDATE OF endpoint ON herald_dead_letters
            WHEN OLD.endpoint IS NOT NEW.endpoint
        BEGIN
            UPDATE herald_dead_letter_counts SET count = count - 1 WHERE endpoint = OLD.endpoint;
            INSERT INTO herald_dead_letter_counts (endpoint, count) VALUES (NEW.endpoint, 1)
                ON CONFLICT (endpoint) DO UPDATE SET count = count + 1;
        END;
        """;

    // The dead letters' own columns after their id, from the endpoint to the last retry: migration 2 made the table with them,
    // migration 9 remakes it (clustered) with the same. Indented as inside the table, so it stands at the literal's margin.
    private const string DeadLetterFailureColumns = """
            endpoint             TEXT    NOT NULL,
            cause                TEXT    NOT NULL,
            error_type           TEXT    NOT NULL,
            error_message        TEXT    NOT NULL,
            stack_trace          TEXT,
            fingerprint          TEXT    NOT NULL,
            first_failure        INTEGER NOT NULL,
            first_failure_offset INTEGER NOT NULL,
            last_failure         INTEGER NOT NULL,
            last_failure_offset  INTEGER NOT NULL,
            attempt_count        INTEGER NOT NULL,
            retry_count          INTEGER NOT NULL,
            last_retry_error     TEXT,
            last_retry_time      INTEGER,
            last_retry_offset    INTEGER,
        """;

    /// <summary>
    /// The columns every table holding an envelope has, from its id (<c>{kind}_id</c>) to its body, one a line with a comma
    /// between, the types aligned at <paramref name="width"/>: the text each released migration ran, built in one place.
    /// </summary>
    private static string EnvelopeColumns(string kind, int width) =>
        string.Join(",\n", EnvelopeColumnTypes.Select(c => "    " + (c.Name.StartsWith('_') ? kind + c.Name : c.Name).PadRight(width) + c.Type));

    private static (string Name, string Type)[] EnvelopeColumnTypes =>
    [
        ("_id", "BLOB    NOT NULL"),
        ("_type", "TEXT    NOT NULL"),
        ("schema_version", "INTEGER NOT NULL"),
        ("time", "INTEGER NOT NULL"),
        ("time_offset", "INTEGER NOT NULL"),
        ("correlation_id", "TEXT"),
        ("causation_id", "TEXT"),
        ("user_id", "TEXT"),
        ("partition_key", "TEXT"),
        ("content_type", "TEXT    NOT NULL"),
        ("headers", "TEXT"),
        ("body", "BLOB    NOT NULL"),
    ];

    /// <summary>The newest schema version this code knows.</summary>
    public static long CurrentVersion => Migrations.Max(m => m.Version);

    /// <summary>
    /// Brings the file to <see cref="CurrentVersion"/> on an open connection with no transaction, and returns the version it
    /// found. Throws <see cref="SqliteSchemaVersionException"/>, changing nothing, when the file is newer than this code.
    /// </summary>
    public static long Migrate(SqliteConnection connection, string dataSource, TimeProvider timeProvider, Action<Migration> onApplied)
    {
        // IMMEDIATE takes the write lock first, so two processes starting on one new file apply each migration once.
        Execute(connection, "BEGIN IMMEDIATE");
        try
        {
            Execute(connection, """
                CREATE TABLE IF NOT EXISTS herald_schema (
                    version     INTEGER NOT NULL PRIMARY KEY,
                    description TEXT    NOT NULL,
                    applied_at  TEXT    NOT NULL
                ) STRICT
                """);
            var applied = new HashSet<long>();
            using (var command = connection.CreateCommand())
            {
                command.CommandText = "SELECT version FROM herald_schema";
                using var rows = command.ExecuteReader();
                while (rows.Read())
                {
                    applied.Add(rows.GetInt64(0));
                }
            }

            var found = applied.Count == 0 ? 0 : applied.Max();

            if (found > CurrentVersion)
            {
                throw new SqliteSchemaVersionException(dataSource, found, CurrentVersion);
            }

            // Versions need not be contiguous (features land in parallel): every version not yet recorded applies, in order.
            foreach (var migration in Migrations.Where(m => !applied.Contains(m.Version)).OrderBy(m => m.Version))
            {
                Execute(connection, migration.Sql);
                using var record = connection.CreateCommand();
                record.CommandText = "INSERT INTO herald_schema (version, description, applied_at) VALUES ($version, $description, $applied_at)";
                record.Parameters.AddWithValue("$version", migration.Version);
                record.Parameters.AddWithValue("$description", migration.Description);
                record.Parameters.AddWithValue("$applied_at", timeProvider.GetUtcNow().ToString("O", System.Globalization.CultureInfo.InvariantCulture));
                record.ExecuteNonQuery();
                onApplied(migration);
            }

            Execute(connection, "COMMIT");
            return found;
        }
        catch
        {
            Execute(connection, "ROLLBACK");
            throw;
        }
    }

    private static void Execute(SqliteConnection connection, string sql)
    {
        using var command = connection.CreateCommand();
#pragma warning disable CA2100 // The SQL is one of this class's constants.
        command.CommandText = sql;
#pragma warning restore CA2100
        command.ExecuteNonQuery();
    }

    /// <summary>One schema step.</summary>
    /// <param name="Version">Its version, higher than every earlier step's.</param>
    /// <param name="Description">What it adds, recorded in <c>herald_schema</c>.</param>
    /// <param name="Sql">The statements it runs.</param>
    internal sealed record Migration(long Version, string Description, string Sql);
}
