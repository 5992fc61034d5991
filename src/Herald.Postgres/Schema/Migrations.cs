namespace Herald.Postgres.Schema;

/// <summary>One step of the schema, applied once, in order, inside the migration transaction.</summary>
/// <param name="Version">The schema version it produces.</param>
/// <param name="Description">What it does, stored beside the version.</param>
/// <param name="Sql">The DDL, with <c>{schema}</c> standing for the quoted schema name and <c>{channel}</c> for the notification channel.</param>
internal sealed record Migration(int Version, string Description, string Sql);

/// <summary>
/// Every version of Herald's PostgreSQL schema. Never edit a released migration: add the next one.
/// </summary>
internal static class Migrations
{
    public static IReadOnlyList<Migration> All { get; } =
    [
        new(1, "event store: events, streams, checkpoints, snapshots, append and delete functions", V1),
        new(2, "reliability: dead letters, outbox, inbox, idempotency", V2),
        new(3, "durable queue", V3),
        new(4, "outbox: failed attempts and a back-off per row", V4),
        new(5, "saga instances", V5),
        new(6, "read models: the active generation of each table", V6),
        new(7, "saga instances: the timeouts a state machine's instance holds", V7),
        new(8, "events: analyzed at every half of growth, primary key pages packed full", V8),
        new(9, "append function: one UPDATE ... RETURNING locks and moves the streams of a group", V9),
        new(10, "dead letters: a count per endpoint kept by triggers", V10),
        new(11, "append function: a group whose streams all moved is probed and written in one statement, without per-member loops", V11),
        new(12, "append function: a stored event id is matched to every member carrying it, so a retry grouped behind another stream's append of the same id is still one", V12),
    ];

    public static int Latest => All[^1].Version;

    // Positions: ((xid8 of the writing transaction + position_offset) << 20) | ordinal within that transaction (ADR 0001).
    // The functions return a status instead of raising, so a conflicting member of a grouped commit writes nothing and
    // fails nobody else, without a subtransaction per member.
    private const string V1 = $$"""
        CREATE TABLE {schema}.log_settings (
            id int PRIMARY KEY CHECK (id = 1),
            position_offset bigint NOT NULL CHECK (position_offset >= 0)
        );
        INSERT INTO {schema}.log_settings (id, position_offset) VALUES (1, 0);

        CREATE TABLE {schema}.streams (
            stream text COLLATE "C" PRIMARY KEY,
            category text COLLATE "C" NOT NULL,
            version bigint NOT NULL,
            last_position bigint NOT NULL,
            deleted_up_to bigint NOT NULL DEFAULT 0,
            deletions bigint[] NOT NULL DEFAULT '{}'
        );

        CREATE TABLE {schema}.events (
            position bigint PRIMARY KEY,
            xid xid8 NOT NULL,
            stream text COLLATE "C" NOT NULL,
            category text COLLATE "C" NOT NULL,
            version bigint NOT NULL,
            event_id uuid NOT NULL,
            type text NOT NULL,
        {{EnvelopeColumns}},
            recorded_at timestamptz NOT NULL,
            deleted boolean NOT NULL DEFAULT false,
            CONSTRAINT events_stream_version UNIQUE (stream, version)
        );
        CREATE INDEX events_event_id ON {schema}.events (event_id);
        CREATE INDEX events_category_position ON {schema}.events (category, position) WHERE NOT deleted;

        CREATE TABLE {schema}.checkpoints (
            subscription_id text COLLATE "C" PRIMARY KEY,
            position bigint NOT NULL,
            updated_at timestamptz NOT NULL
        );

        CREATE TABLE {schema}.snapshots (
            stream text COLLATE "C" PRIMARY KEY,
            version bigint NOT NULL,
            state_type text NOT NULL,
            schema_version int NOT NULL,
            state bytea NOT NULL,
            created_at timestamptz NOT NULL
        );

        -- Appends for several streams, each at most once, in one call (a round of the append coordinator's group; one member
        -- for a single append). Members are checked one by one but written set-based. It returns arrays in member order:
        -- o_status 0 appended, 1 idempotent retry (nothing written), 2 expected version not met, 3 idempotency conflict
        -- (o_detail); o_version the stream's version after (or as found); o_position the last event's position. p_expected: -2 any, -1 no stream, -4 stream exists, >= 1 exact. p_first/p_counts locate each member's
        -- events in the event arrays (1-based); p_members gives each event's member. An event's ordinal in the transaction is
        -- p_first_ordinal + its index - 1.
        CREATE FUNCTION {schema}.append_events(
        {{AppendEventsParameters}}
        LANGUAGE plpgsql
        -- Plans are made once per connection, often while the tables are still small; every statement here is meant to use
        -- an index, so keep the planner from settling on a sequential scan that would grow with the log.
        SET plan_cache_mode = force_generic_plan
        SET enable_seqscan = off
        AS $fn$
        DECLARE
            v_n int := cardinality(p_streams);
            v_xid bigint := pg_current_xact_id()::text::bigint;
            v_found_members int[];
            v_found_versions bigint[];
            v_found_deleted bigint[];
            v_version bigint[];
            v_deleted bigint[];
            v_status int[];
            v_result_version bigint[];
            v_result_position bigint[];
            v_detail text[];
            v_base bigint[];
            v_missing int := 0;
            v_existing boolean := false;
            v_any boolean := false;
            v_current bigint;
            v_expected bigint;
            v_probe record;
            v_event record;
            v_start bigint;
            v_place bigint;
            v_deletions bigint[];
            v_m int;
            v_k int;
            v_hit int[];
            v_written int;
            v_hit_version bigint[];
        BEGIN
            FOR v_pass IN 1 .. 2 LOOP
                -- Lock the members' streams that exist, always in stream order (concurrent groups never deadlock on each other),
                -- and read their last version (deleted ones included) and deletion point.
                SELECT coalesce(array_agg(x.m), '{}'), coalesce(array_agg(x.version), '{}'), coalesce(array_agg(x.deleted_up_to), '{}')
                  INTO v_found_members, v_found_versions, v_found_deleted
                  FROM (SELECT u.m::int AS m, s.version, s.deleted_up_to
                          FROM unnest(p_streams) WITH ORDINALITY AS u(stream, m)
                          JOIN {schema}.streams s ON s.stream = u.stream
                         ORDER BY s.stream
                           FOR UPDATE OF s) x;
                v_version := array_fill(-1::bigint, ARRAY[v_n]);
                v_deleted := array_fill(0::bigint, ARRAY[v_n]);
                FOR v_k IN 1 .. cardinality(v_found_members) LOOP
                    v_version[v_found_members[v_k]] := v_found_versions[v_k];
                    v_deleted[v_found_members[v_k]] := v_found_deleted[v_k];
                    v_existing := v_existing OR v_found_versions[v_k] > 0;
                END LOOP;
                EXIT WHEN v_pass = 2;

                -- Create the missing streams a member may start (no stream, any), then lock and read again. A racing creator
                -- makes the insert wait for its commit. A member whose expectation needs an existing stream creates nothing.
                v_missing := 0;
                FOR v_m IN 1 .. v_n LOOP
                    IF v_version[v_m] = -1 AND p_expected[v_m] IN (-1, -2) THEN
                        v_missing := v_missing + 1;
                    END IF;
                END LOOP;
                EXIT WHEN v_missing = 0;
                INSERT INTO {schema}.streams (stream, category, version, last_position)
                SELECT u.stream, u.category, 0, 0
                  FROM unnest(p_streams, p_categories, p_expected, v_version) AS u(stream, category, expected, version)
                 WHERE u.version = -1 AND u.expected IN (-1, -2)
                 ORDER BY u.stream
                ON CONFLICT (stream) DO NOTHING;
            END LOOP;

        {{AppendMemberArrays}}

            -- Idempotency: which of the event ids are already stored (one index scan; rows only for retries and mistakes).
            IF v_existing THEN
        {{AppendIdempotencyProbe}}
        {{AppendIdempotentRetry}}
            END IF;

            -- Expected versions of the members not decided above; a member that fails writes nothing.
            FOR v_m IN 1 .. v_n LOOP
                CONTINUE WHEN v_status[v_m] <> -1;
                v_current := CASE WHEN v_version[v_m] > v_deleted[v_m] THEN v_version[v_m] ELSE 0 END;
                v_expected := p_expected[v_m];
                IF v_version[v_m] >= 0 AND (v_expected = -2 OR (v_expected = -1 AND v_current = 0)
                        OR (v_expected = -4 AND v_current > 0) OR (v_expected >= 1 AND v_current = v_expected)) THEN
                    v_status[v_m] := 0;
                    v_any := true;
                    v_base[v_m] := v_version[v_m];
                    v_result_version[v_m] := v_version[v_m] + p_counts[v_m];
                    v_result_position[v_m] := ((v_xid + p_offset) << 20) | (p_first_ordinal + p_first[v_m] + p_counts[v_m] - 2);
                ELSE
                    v_status[v_m] := 2;
                    v_result_version[v_m] := v_current;
                END IF;
            END LOOP;

            IF v_any THEN
                -- One statement writes the events and moves the streams on. The caller notifies: the append coordinator
                -- after its commit, a unit of work inside its transaction.
                WITH inserted AS (
                    INSERT INTO {schema}.events (position, xid, stream, category, version, event_id, type, schema_version, time,
                                                 correlation_id, causation_id, user_id, partition_key, content_type, headers, body, recorded_at)
                    SELECT ((v_xid + p_offset) << 20) | (p_first_ordinal + e.j - 1), pg_current_xact_id(), p_streams[e.m], p_categories[e.m],
                           v_base[e.m] + (e.j - p_first[e.m] + 1), e.id, e.type, e.schema_version, e.time, e.correlation_id, e.causation_id,
                           e.user_id, e.partition_key, e.content_type, e.headers, e.body, p_recorded_at
                      FROM unnest(p_ids, p_types, p_schema_versions, p_times, p_correlation_ids, p_causation_ids, p_user_ids,
                                  p_partition_keys, p_content_types, p_headers, p_bodies, p_members)
                           WITH ORDINALITY AS e(id, type, schema_version, time, correlation_id, causation_id, user_id, partition_key,
                                                content_type, headers, body, m, j)
                     WHERE v_base[e.m] IS NOT NULL),
                moved AS (
                    UPDATE {schema}.streams s SET version = u.version, last_position = u.position
                      FROM unnest(p_streams, v_result_version, v_result_position, v_status) AS u(stream, version, position, status)
                     WHERE u.status = 0 AND s.stream = u.stream)
                SELECT 1 INTO v_written;
            END IF;

            o_status := v_status;
            o_version := v_result_version;
            o_position := v_result_position;
            o_detail := v_detail;
        END
        $fn$;

        -- o_status: 0 deleted (or nothing to delete), 2 expected version not met; o_actual: the version before.
        CREATE FUNCTION {schema}.delete_stream(p_stream text, p_expected bigint, OUT o_status int, OUT o_actual bigint)
        LANGUAGE plpgsql
        SET enable_seqscan = off
        AS $fn$
        DECLARE
            v_stream {schema}.streams%ROWTYPE;
        BEGIN
            SELECT * INTO v_stream FROM {schema}.streams WHERE stream = p_stream FOR UPDATE;
            o_actual := CASE WHEN NOT FOUND THEN 0 WHEN v_stream.version > v_stream.deleted_up_to THEN v_stream.version ELSE 0 END;
            IF NOT (p_expected = -2 OR (p_expected = -1 AND o_actual = 0) OR (p_expected = -4 AND o_actual > 0)
                    OR (p_expected >= 1 AND o_actual = p_expected)) THEN
                o_status := 2; RETURN;
            END IF;
            IF v_stream.stream IS NOT NULL THEN
                UPDATE {schema}.streams
                   SET deleted_up_to = version,
                       deletions = CASE WHEN version = ANY (deletions) THEN deletions ELSE array_append(deletions, version) END
                 WHERE stream = p_stream;
                UPDATE {schema}.events SET deleted = true WHERE stream = p_stream AND version <= v_stream.version AND NOT deleted;
            END IF;
            o_status := 0;
        END
        $fn$;
        """;

    // Times are timestamptz (microseconds); expiry columns hold times of the application's TimeProvider, never now().
    // The envelope columns match Internal/EnvelopeColumns.
    private const string V2 = $$"""
        CREATE TABLE {schema}.dead_letters (
            id uuid PRIMARY KEY,
            endpoint text COLLATE "C" NOT NULL,
            cause text NOT NULL,
            error_type text NOT NULL,
            error_message text NOT NULL,
            stack_trace text,
            fingerprint text COLLATE "C" NOT NULL,
            first_failure timestamptz NOT NULL,
            last_failure timestamptz NOT NULL,
            attempt_count int NOT NULL,
            retry_count int NOT NULL,
            last_retry_error text,
            last_retry_time timestamptz,
            message_id uuid NOT NULL,
            message_type text COLLATE "C" NOT NULL,
        {{EnvelopeColumns}},
            delivery_attempt int NOT NULL
        );
        CREATE INDEX dead_letters_endpoint_id ON {schema}.dead_letters (endpoint, id);

        -- seq is the order rows were added; the relay reads pending rows in that order.
        CREATE TABLE {schema}.outbox (
            seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            id uuid NOT NULL UNIQUE,
            destination_kind text NOT NULL,
            destination text NOT NULL,
            created_at timestamptz NOT NULL,
            outbox_partition_key text,
            deliver_at timestamptz,
            sent_at timestamptz,
            message_id uuid NOT NULL,
            message_type text COLLATE "C" NOT NULL,
        {{EnvelopeColumns}},
            delivery_attempt int NOT NULL
        );
        CREATE INDEX outbox_pending ON {schema}.outbox (seq) WHERE sent_at IS NULL;
        CREATE INDEX outbox_sent ON {schema}.outbox (sent_at) WHERE sent_at IS NOT NULL;

        CREATE TABLE {schema}.inbox (
            endpoint text COLLATE "C" NOT NULL,
            message_id uuid NOT NULL,
            expires_at timestamptz NOT NULL,
            PRIMARY KEY (endpoint, message_id)
        );
        CREATE INDEX inbox_expires_at ON {schema}.inbox (expires_at);

        CREATE TABLE {schema}.idempotency (
            idempotency_key text COLLATE "C" PRIMARY KEY,
            lock_token uuid NOT NULL,
            completed boolean NOT NULL,
            result bytea,
            expires_at timestamptz NOT NULL
        );
        CREATE INDEX idempotency_expires_at ON {schema}.idempotency (expires_at);
        """;

    // The columns of every table holding an envelope after its id and type, as each released migration wrote them: the
    // metadata, the partition key (collated in queue_messages only), the content.
    private const string EnvelopeColumns = EnvelopeMetadataColumns + ",\n    partition_key text,\n" + EnvelopeContentColumns;

    private const string EnvelopeMetadataColumns = """
            schema_version int NOT NULL,
            time timestamptz NOT NULL,
            correlation_id text,
            causation_id text,
            user_id text
        """;

    private const string EnvelopeContentColumns = """
            content_type text NOT NULL,
            headers jsonb,
            body bytea NOT NULL
        """;

    /// <summary>The migration's SQL for a schema (already validated, so quoting cannot be escaped).</summary>
    public static string Render(Migration migration, string schema) =>
        migration.Sql.Replace("{schema}", Quote(schema), StringComparison.Ordinal).Replace("{channel}", ChannelFor(schema), StringComparison.Ordinal);

    /// <summary>
    /// The SQL of a migration that only creates tables and indexes (the queue's, migration 3), creating only those missing:
    /// how tables dropped behind Herald's back are made again.
    /// </summary>
    public static string RenderIfMissing(Migration migration, string schema) =>
        Render(migration, schema)
            .Replace("CREATE TABLE ", "CREATE TABLE IF NOT EXISTS ", StringComparison.Ordinal)
            .Replace("CREATE INDEX ", "CREATE INDEX IF NOT EXISTS ", StringComparison.Ordinal);

    /// <summary>The schema name as a quoted identifier.</summary>
    public static string Quote(string schema) => "\"" + schema + "\"";

    /// <summary>The notification channel appends in the schema signal on.</summary>
    public static string ChannelFor(string schema) => schema + "_events";

    // The durable queue (Transport/PostgresQueueTransport). A message is a row: claimable when visible_at has passed and no
    // lease holds it; a consumer leases rows with FOR UPDATE SKIP LOCKED, deletes them on ack, moves them to
    // queue_dead_letters on dead-letter. attempts counts the deliveries that ended without an ack.
    private const string V3 = $$"""
        CREATE TABLE {schema}.queue_messages (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            queue text COLLATE "C" NOT NULL,
            message_id uuid NOT NULL,
            message_type text NOT NULL,
        {{EnvelopeMetadataColumns}},
            partition_key text COLLATE "C",
        {{EnvelopeContentColumns}},
            enqueued_at timestamptz NOT NULL,
            visible_at timestamptz NOT NULL,
            attempts int NOT NULL DEFAULT 0,
            lease_owner uuid,
            lease_until timestamptz
        );
        CREATE INDEX queue_messages_ready ON {schema}.queue_messages (queue, visible_at, id);
        CREATE INDEX queue_messages_key ON {schema}.queue_messages (queue, partition_key, id) WHERE partition_key IS NOT NULL;
        CREATE INDEX queue_messages_lease_owner ON {schema}.queue_messages (lease_owner) WHERE lease_owner IS NOT NULL;

        CREATE TABLE {schema}.queue_bindings (
            topic text COLLATE "C" NOT NULL,
            queue text COLLATE "C" NOT NULL,
            bound_at timestamptz NOT NULL,
            PRIMARY KEY (topic, queue)
        );

        CREATE TABLE {schema}.queue_dead_letters (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            queue text COLLATE "C" NOT NULL,
            message_id uuid NOT NULL,
            message_type text NOT NULL,
        {{EnvelopeColumns}},
            enqueued_at timestamptz NOT NULL,
            delivery_attempt int NOT NULL,
            reason text NOT NULL,
            dead_lettered_at timestamptz NOT NULL
        );
        CREATE INDEX queue_dead_letters_queue ON {schema}.queue_dead_letters (queue, id);
        """;

    private const string V4 = """
        ALTER TABLE {schema}.outbox ADD COLUMN attempts int NOT NULL DEFAULT 0, ADD COLUMN next_attempt_at timestamptz;
        CREATE INDEX outbox_waiting ON {schema}.outbox (outbox_partition_key, seq) WHERE sent_at IS NULL AND next_attempt_at IS NOT NULL;
        """;

    // Saga instances (optimistic concurrency on version); the status index serves the start-up scan for unfinished ones.
    private const string V5 = """
        CREATE TABLE {schema}.sagas (
            saga_type text COLLATE "C" NOT NULL,
            id text COLLATE "C" NOT NULL,
            status text NOT NULL,
            state text,
            current_step int NOT NULL,
            completed_steps text[] NOT NULL,
            data bytea NOT NULL,
            error text,
            created_at timestamptz NOT NULL,
            updated_at timestamptz NOT NULL,
            version bigint NOT NULL,
            PRIMARY KEY (saga_type, id)
        );
        CREATE INDEX sagas_by_status ON {schema}.sagas (status, saga_type, id);
        """;

    // The tables of the read models themselves (rm_{table}_g{generation}) are created by PostgresReadModelStore when first
    // written or reset: their names are data, not schema. This registry says which generation reads see.
    private const string V6 = """
        CREATE TABLE {schema}.read_models (
            table_name text COLLATE "C" PRIMARY KEY,
            active_generation int NOT NULL CHECK (active_generation >= 1),
            activated_at timestamptz NOT NULL
        );
        """;

    private const string V7 = """
        ALTER TABLE {schema}.sagas ADD COLUMN timeouts jsonb;
        """;

    // Issue 16. Herald's own statements on events no longer depend on statistics (the append function plans generically with
    // sequential scans off; reads run behind Internal/PlannerGuard), so the default autoanalyze at every 10% of growth only
    // costs: a sample read of the whole table (0.6-1.2 s at 1 M events on the 2-core test machine, docs/postgres.md), about seven times per doubling,
    // competing with the appends. Every 50% keeps statistics for the user's own queries. The primary key only ever grows at its
    // right edge, so its pages are packed full (the default leaves 10% free for inserts that never come). Both take effect
    // without rewriting anything: at the next autoanalyze and on the next page splits.
    private const string V8 = """
        ALTER TABLE {schema}.events SET (autovacuum_analyze_scale_factor = 0.5);
        ALTER INDEX {schema}.events_pkey SET (fillfactor = 100);
        """;

    // Issue 9. The append function of migration 1 (same signature, same answers), rebuilt so a group's common case costs
    // three statements and no per-stream row lock of its own: one UPDATE ... RETURNING checks every member's expected
    // version against its stream's row and moves the row on (locking it: the lock and the move are one heap update instead
    // of a lock record and then an update), in stream order; one probe looks for stored event ids; one INSERT writes the
    // events. Members it could not move take the old path: a missing stream a member may start is created already moved
    // (INSERT ... ON CONFLICT DO NOTHING RETURNING; a racing creator makes it wait for that commit), and what is left (a
    // conflict, or a stream a racing writer created or moved) is read without a lock, and locked and checked as migration 1
    // did only if it meets its expectation now. A moved member whose
    // event ids turn out to be stored (an idempotent retry or a mistake) is moved back before anything is written, since
    // its last event is still stored at its old version. The expectation test below is migration 1's, on the row's
    // version and deletion point (current version = version when above deleted_up_to, else 0).
    private const string V9 = $$"""
        {{AppendEventsHead}}
        BEGIN
            v_moved := array_fill(false, ARRAY[v_n]);
            v_version := array_fill(-1::bigint, ARRAY[v_n]);
            v_deleted := array_fill(0::bigint, ARRAY[v_n]);

            -- Lock and move, in stream order, every existing stream whose member's expectation holds.
        {{AppendMoveStreams}}
                RETURNING u.m, s.version - u.n AS base, s.deleted_up_to)
            SELECT coalesce(array_agg(m), '{}'), coalesce(array_agg(base), '{}'), coalesce(array_agg(deleted_up_to), '{}')
              INTO v_found_members, v_found_versions, v_found_deleted
              FROM moved;
        {{AppendMarkMoved}}

        {{AppendAfterMove}}
        $fn$;
        """;

    // The parameters of append_events: migration 9 replaces the function, which it can only do with the same ones. Indented
    // as inside the function, so it stands at the literal's margin where it is interpolated.
    private const string AppendEventsParameters = """
            p_offset bigint, p_recorded_at timestamptz, p_first_ordinal int,
            p_streams text[], p_categories text[], p_expected bigint[], p_first int[], p_counts int[],
            p_members int[], p_ids uuid[], p_types text[], p_schema_versions int[], p_times timestamptz[],
            p_correlation_ids text[], p_causation_ids text[], p_user_ids text[], p_partition_keys text[],
            p_content_types text[], p_headers jsonb[], p_bodies bytea[],
            OUT o_status int[], OUT o_version bigint[], OUT o_position bigint[], OUT o_detail text[])
        """;

    // The parts of append_events that migrations 9 and 11 share (migration 9's text is pinned; this is how it is built, not
    // a change), each indented as inside the function, so it stands at the literal's margin where it is interpolated. The
    // head: the signature and the variables of migration 9 (migration 11 declares three more after them).
    private const string AppendEventsHead = $$"""
        CREATE OR REPLACE FUNCTION {schema}.append_events(
        {{AppendEventsParameters}}
        LANGUAGE plpgsql
        SET plan_cache_mode = force_generic_plan
        SET enable_seqscan = off
        AS $fn$
        DECLARE
            v_n int := cardinality(p_streams);
            v_head bigint := (pg_current_xact_id()::text::bigint + p_offset) << 20;
            v_moved boolean[];
            v_found_members int[];
            v_found_versions bigint[];
            v_found_deleted bigint[];
            v_version bigint[];
            v_deleted bigint[];
            v_status int[];
            v_result_version bigint[];
            v_result_position bigint[];
            v_detail text[];
            v_base bigint[];
            v_left int;
            v_existing boolean := false;
            v_any boolean := false;
            v_slow boolean := false;
            v_undo boolean := false;
            v_current bigint;
            v_expected bigint;
            v_probe record;
            v_event record;
            v_start bigint;
            v_place bigint;
            v_deletions bigint[];
            v_m int;
            v_k int;
            v_hit int[];
            v_written int;
            v_hit_version bigint[];
        """;

    // The stream UPDATE up to its RETURNING: every existing stream whose member's expectation holds, locked and moved in
    // stream order.
    private const string AppendMoveStreams = """
            WITH moved AS (
                UPDATE {schema}.streams s
                   SET version = s.version + u.n,
                       last_position = v_head | (p_first_ordinal + u.at + u.n - 2)
                  FROM (SELECT x.stream, x.expected, x.at, x.n, x.m::int AS m
                          FROM unnest(p_streams, p_expected, p_first, p_counts) WITH ORDINALITY AS x(stream, expected, at, n, m)
                         ORDER BY x.stream COLLATE "C") u
                 WHERE s.stream = u.stream
                   AND (u.expected = -2
                        OR (u.expected = -1 AND s.version <= s.deleted_up_to)
                        OR (u.expected = -4 AND s.version > s.deleted_up_to)
                        OR (u.expected >= 1 AND s.version > s.deleted_up_to AND s.version = u.expected))
        """;

    // The members the UPDATE moved, spread over the per-member arrays.
    private const string AppendMarkMoved = """
            v_left := v_n - cardinality(v_found_members);
            FOR v_k IN 1 .. cardinality(v_found_members) LOOP
                v_moved[v_found_members[v_k]] := true;
                v_version[v_found_members[v_k]] := v_found_versions[v_k];
                v_deleted[v_found_members[v_k]] := v_found_deleted[v_k];
                v_existing := v_existing OR v_found_versions[v_k] > 0;
            END LOOP;
        """;

    // What append_events does once its UPDATE has moved the streams it could (migrations 9 and 11; migration 9's text is
    // pinned, this is how it is built, not a change): start the missing streams, read and lock what is left, probe for stored
    // event ids, check every member's expectation and write the members that pass. Indented as inside the function, so it
    // stands at the literal's margin where it is interpolated.
    private const string AppendAfterMove = $$"""
            -- Start the missing streams a member may start (no stream, any), already moved.
            IF v_left > 0 THEN
                WITH created AS (
                    INSERT INTO {schema}.streams (stream, category, version, last_position)
                    SELECT u.stream, u.category, u.n, v_head | (p_first_ordinal + u.at + u.n - 2)
                      FROM unnest(p_streams, p_categories, p_expected, p_first, p_counts, v_moved) WITH ORDINALITY
                           AS u(stream, category, expected, at, n, moved, m)
                     WHERE NOT u.moved AND u.expected IN (-1, -2)
                     ORDER BY u.stream COLLATE "C"
                    ON CONFLICT (stream) DO NOTHING
                    RETURNING stream)
                SELECT coalesce(array_agg(u.m::int), '{}')
                  INTO v_found_members
                  FROM created c JOIN unnest(p_streams) WITH ORDINALITY AS u(stream, m) ON u.stream = c.stream;
                v_left := v_left - cardinality(v_found_members);
                FOREACH v_m IN ARRAY v_found_members LOOP
                    v_moved[v_m] := true;
                    v_version[v_m] := 0;
                END LOOP;
            END IF;

            -- What is left (a conflict, or a stream another writer created or moved meanwhile) is read without a lock, so a
            -- conflict never waits for, or deadlocks with, another group. Only if one of them now meets its expectation are
            -- they locked and read again, as migration 1 did, and written below like the others.
            IF v_left > 0 THEN
                FOR v_pass IN 1 .. 2 LOOP
                    IF v_pass = 1 THEN
                        SELECT coalesce(array_agg(u.m::int), '{}'), coalesce(array_agg(s.version), '{}'), coalesce(array_agg(s.deleted_up_to), '{}')
                          INTO v_found_members, v_found_versions, v_found_deleted
                          FROM unnest(p_streams, v_moved) WITH ORDINALITY AS u(stream, moved, m)
                          JOIN {schema}.streams s ON s.stream = u.stream
                         WHERE NOT u.moved;
                    ELSE
                        SELECT coalesce(array_agg(x.m), '{}'), coalesce(array_agg(x.version), '{}'), coalesce(array_agg(x.deleted_up_to), '{}')
                          INTO v_found_members, v_found_versions, v_found_deleted
                          FROM (SELECT u.m::int AS m, s.version, s.deleted_up_to
                                  FROM unnest(p_streams, v_moved) WITH ORDINALITY AS u(stream, moved, m)
                                  JOIN {schema}.streams s ON s.stream = u.stream
                                 WHERE NOT u.moved
                                 ORDER BY s.stream
                                   FOR UPDATE OF s) x;
                    END IF;
                    FOR v_k IN 1 .. cardinality(v_found_members) LOOP
                        v_version[v_found_members[v_k]] := v_found_versions[v_k];
                        v_deleted[v_found_members[v_k]] := v_found_deleted[v_k];
                    END LOOP;
                    EXIT WHEN v_pass = 2;
                    FOR v_m IN 1 .. v_n LOOP
                        CONTINUE WHEN v_moved[v_m] OR v_version[v_m] < 0;
                        v_current := CASE WHEN v_version[v_m] > v_deleted[v_m] THEN v_version[v_m] ELSE 0 END;
                        v_expected := p_expected[v_m];
                        v_slow := v_slow OR v_expected = -2 OR (v_expected = -1 AND v_current = 0)
                            OR (v_expected = -4 AND v_current > 0) OR (v_expected >= 1 AND v_current = v_expected);
                    END LOOP;
                    EXIT WHEN NOT v_slow;
                END LOOP;
                FOR v_m IN 1 .. v_n LOOP
                    v_existing := v_existing OR (NOT v_moved[v_m] AND v_version[v_m] > 0);
                END LOOP;
            END IF;

        {{AppendMemberArrays}}

            -- Idempotency, as in migration 1: which of the event ids are already stored in their member's stream.
            IF v_existing THEN
        {{AppendIdempotencyProbe}}
                    v_undo := v_undo OR v_moved[v_m];
        {{AppendIdempotentRetry}}

                -- A moved stream whose member writes nothing goes back to its version and last event (still stored).
                IF v_undo THEN
                    UPDATE {schema}.streams s
                       SET version = u.version,
                           last_position = (SELECT ev.position FROM {schema}.events ev WHERE ev.stream = s.stream AND ev.version = u.version)
                      FROM unnest(p_streams, v_version, v_moved, v_hit) AS u(stream, version, moved, hit)
                     WHERE u.moved AND u.hit IS NOT NULL AND s.stream = u.stream;
                END IF;
            END IF;

            -- Expected versions of the members not decided above, as in migration 1 (a moved member passed it in the
            -- UPDATE, on the same row); a member that fails writes nothing.
            FOR v_m IN 1 .. v_n LOOP
                CONTINUE WHEN v_status[v_m] <> -1;
                v_current := CASE WHEN v_version[v_m] > v_deleted[v_m] THEN v_version[v_m] ELSE 0 END;
                v_expected := p_expected[v_m];
                IF v_version[v_m] >= 0 AND (v_expected = -2 OR (v_expected = -1 AND v_current = 0)
                        OR (v_expected = -4 AND v_current > 0) OR (v_expected >= 1 AND v_current = v_expected)) THEN
                    v_status[v_m] := 0;
                    v_any := true;
                    v_base[v_m] := v_version[v_m];
                    v_result_version[v_m] := v_version[v_m] + p_counts[v_m];
                    v_result_position[v_m] := v_head | (p_first_ordinal + p_first[v_m] + p_counts[v_m] - 2);
                ELSE
                    v_status[v_m] := 2;
                    v_result_version[v_m] := v_current;
                END IF;
            END LOOP;

            IF v_any THEN
                -- The events, and the streams the UPDATE above did not move (members that took the old path).
                WITH inserted AS (
                    INSERT INTO {schema}.events (position, xid, stream, category, version, event_id, type, schema_version, time,
                                                 correlation_id, causation_id, user_id, partition_key, content_type, headers, body, recorded_at)
                    SELECT v_head | (p_first_ordinal + e.j - 1), pg_current_xact_id(), p_streams[e.m], p_categories[e.m],
                           v_base[e.m] + (e.j - p_first[e.m] + 1), e.id, e.type, e.schema_version, e.time, e.correlation_id, e.causation_id,
                           e.user_id, e.partition_key, e.content_type, e.headers, e.body, p_recorded_at
                      FROM unnest(p_ids, p_types, p_schema_versions, p_times, p_correlation_ids, p_causation_ids, p_user_ids,
                                  p_partition_keys, p_content_types, p_headers, p_bodies, p_members)
                           WITH ORDINALITY AS e(id, type, schema_version, time, correlation_id, causation_id, user_id, partition_key,
                                                content_type, headers, body, m, j)
                     WHERE v_base[e.m] IS NOT NULL),
                moved AS (
                    UPDATE {schema}.streams s SET version = u.version, last_position = u.position
                      FROM unnest(p_streams, v_result_version, v_result_position, v_status, v_moved) AS u(stream, version, position, status, moved)
                     WHERE v_slow AND u.status = 0 AND NOT u.moved AND s.stream = u.stream)
                SELECT 1 INTO v_written;
            END IF;

            o_status := v_status;
            o_version := v_result_version;
            o_position := v_result_position;
            o_detail := v_detail;
        END
        """;

    // The per-member arrays append_events fills as it decides each member, the same in migrations 1 and 9 (migration 1's
    // text is pinned; this is how it is built, not a change): the answers, the version a member writes after, and the first
    // stored event id the idempotency probe finds (with its version). Indented as inside the function, so it stands at the
    // literal's margin where it is interpolated.
    private const string AppendMemberArrays = """
            v_status := array_fill(-1, ARRAY[v_n]);
            v_result_version := array_fill(0::bigint, ARRAY[v_n]);
            v_result_position := array_fill(0::bigint, ARRAY[v_n]);
            v_detail := array_fill(NULL::text, ARRAY[v_n]);
            v_base := array_fill(NULL::bigint, ARRAY[v_n]);
            v_hit := array_fill(NULL::int, ARRAY[v_n]);
            v_hit_version := array_fill(NULL::bigint, ARRAY[v_n]);
        """;

    // The idempotency check of append_events, the same in migrations 1 and 9 (migration 1's text is pinned; this is how it
    // is built, not a change). Each part keeps its indentation inside the function, so it stands at the literal's margin
    // where it is interpolated. The probe: which of the event ids are already stored in their member's stream (one index
    // scan; rows only for retries and mistakes); it ends by opening the loop over the members with a stored id, where
    // migration 9 adds a line before the retry check, which closes it.
    private const string AppendIdempotencyProbe = $$"""
        {{AppendProbeFirstCarrier}}
                    v_m := p_members[v_k];
                    CONTINUE WHEN v_probe.stream <> p_streams[v_m] OR v_version[v_m] <= 0;
                    IF v_hit[v_m] IS NULL OR v_k < v_hit[v_m] THEN
                        v_hit[v_m] := v_k;
                        v_hit_version[v_m] := v_probe.version;
                    END IF;
                END LOOP;
                FOR v_m IN 1 .. v_n LOOP
                    CONTINUE WHEN v_hit[v_m] IS NULL;
        """;

    // The probe's first lines as migrations 1, 9 and 11 wrote them: a stored id is taken for the first event carrying it in the
    // call (array_position), so a member behind another with the same id in another stream never found its own (migration 12).
    private const string AppendProbeFirstCarrier = """
                FOR v_probe IN
                    SELECT ev.event_id, ev.stream, ev.version FROM {schema}.events ev WHERE ev.event_id = ANY (p_ids)
                LOOP
                    v_k := array_position(p_ids, v_probe.event_id);
        """;

    // Migration 12's: every event of the call whose id is stored in its own member's stream, each with its own index.
    private const string AppendProbeOwnStream = """
                FOR v_probe IN
                    SELECT x.k::int AS k, ev.stream, ev.version
                      FROM {schema}.events ev
                      JOIN unnest(p_ids, p_members) WITH ORDINALITY AS x(id, m, k) ON x.id = ev.event_id AND ev.stream = p_streams[x.m]
                     WHERE ev.event_id = ANY (p_ids)
                LOOP
                    v_k := v_probe.k;
        """;

    // The retry check (migrations 1 and 9): a member some of whose event ids are stored is an idempotent retry (status 1,
    // nothing written) when its whole batch is stored where this append would put it, else an idempotency conflict (status 3).
    private const string AppendIdempotentRetry = """
                    v_current := CASE WHEN v_version[v_m] > v_deleted[v_m] THEN v_version[v_m] ELSE 0 END;
                    v_result_version[v_m] := v_current;
                    IF v_hit[v_m] <> p_first[v_m] THEN
                        v_status[v_m] := 3;
                        v_detail[v_m] := format('The event id %s is already stored at version %s, but not as part of the same append.', p_ids[v_hit[v_m]], v_hit_version[v_m]);
                        CONTINUE;
                    END IF;
                    v_start := v_hit_version[v_m];
                    v_expected := p_expected[v_m];
                    IF v_expected = -1 THEN
                        SELECT s.deletions INTO v_deletions FROM {schema}.streams s WHERE s.stream = p_streams[v_m];
                    END IF;
                    v_place := CASE
                        WHEN v_expected >= 1 THEN v_expected + 1
                        WHEN v_expected = -1 THEN CASE WHEN v_start = 1 OR (v_start - 1) = ANY (v_deletions) THEN v_start ELSE -1 END
                        ELSE v_start END;
                    IF v_place <> v_start THEN
                        v_status[v_m] := 3;
                        v_detail[v_m] := format('The event id %s is already stored at version %s, not where this append would put it.', p_ids[p_first[v_m]], v_start);
                        CONTINUE;
                    END IF;
                    v_status[v_m] := 1;
                    FOR v_k IN 0 .. p_counts[v_m] - 1 LOOP
                        SELECT ev.event_id, ev.type, ev.body, ev.position INTO v_event
                          FROM {schema}.events ev WHERE ev.stream = p_streams[v_m] AND ev.version = v_start + v_k;
                        IF NOT FOUND OR v_event.event_id <> p_ids[p_first[v_m] + v_k] THEN
                            v_status[v_m] := 3;
                            v_detail[v_m] := 'Some of the event ids were already appended, but not as this same batch.';
                            EXIT;
                        END IF;
                        IF v_event.type <> p_types[p_first[v_m] + v_k] OR v_event.body <> p_bodies[p_first[v_m] + v_k] THEN
                            v_status[v_m] := 3;
                            v_detail[v_m] := format('The event id %s is already stored with another type or body.', p_ids[p_first[v_m] + v_k]);
                            EXIT;
                        END IF;
                    END LOOP;
                    IF v_status[v_m] = 1 THEN
                        v_result_version[v_m] := v_start + p_counts[v_m] - 1;
                        v_result_position[v_m] := v_event.position;
                    END IF;
                END LOOP;
        """;

    // Issue 16. Counting an endpoint's dead letters read every one of its rows (the monitor and the retention count after
    // every change). Triggers keep a count per endpoint in the statement that inserts or deletes the rows, so any writer
    // (the store, a bulk INSERT ... SELECT, a DELETE by hand) keeps it exact and a count reads a few rows. Each endpoint's
    // count is spread over 16 slots (chosen by the backend's pid) that the count sums, so concurrent dead-lettering
    // sessions do not queue on one row lock until they commit. Statement triggers with transition tables add one row per
    // endpoint and statement, not one per dead letter. CREATE TRIGGER locks out writers of dead_letters until the
    // migration commits, so the backfill below counts exactly the rows the triggers will not see.
    private const string V10 = """
        CREATE TABLE {schema}.dead_letter_counts (
            endpoint text COLLATE "C" NOT NULL,
            slot int NOT NULL,
            count bigint NOT NULL,
            PRIMARY KEY (endpoint, slot)
        );

        CREATE FUNCTION {schema}.dead_letters_counted() RETURNS trigger
        LANGUAGE plpgsql
        AS $fn$
        BEGIN
            IF TG_OP = 'INSERT' THEN
                INSERT INTO {schema}.dead_letter_counts AS c (endpoint, slot, count)
                SELECT endpoint, pg_backend_pid() % 16, count(*) FROM added GROUP BY endpoint ORDER BY endpoint
                ON CONFLICT (endpoint, slot) DO UPDATE SET count = c.count + excluded.count;
            ELSIF TG_OP = 'DELETE' THEN
                INSERT INTO {schema}.dead_letter_counts AS c (endpoint, slot, count)
                SELECT endpoint, pg_backend_pid() % 16, -count(*) FROM removed GROUP BY endpoint ORDER BY endpoint
                ON CONFLICT (endpoint, slot) DO UPDATE SET count = c.count + excluded.count;
            ELSIF TG_OP = 'UPDATE' THEN
                INSERT INTO {schema}.dead_letter_counts AS c (endpoint, slot, count)
                VALUES (OLD.endpoint, pg_backend_pid() % 16, -1), (NEW.endpoint, pg_backend_pid() % 16, 1)
                ON CONFLICT (endpoint, slot) DO UPDATE SET count = c.count + excluded.count;
            ELSE
                DELETE FROM {schema}.dead_letter_counts;
            END IF;
            RETURN NULL;
        END
        $fn$;

        CREATE TRIGGER dead_letters_counted_insert AFTER INSERT ON {schema}.dead_letters
            REFERENCING NEW TABLE AS added FOR EACH STATEMENT EXECUTE FUNCTION {schema}.dead_letters_counted();
        CREATE TRIGGER dead_letters_counted_delete AFTER DELETE ON {schema}.dead_letters
            REFERENCING OLD TABLE AS removed FOR EACH STATEMENT EXECUTE FUNCTION {schema}.dead_letters_counted();
        CREATE TRIGGER dead_letters_counted_move AFTER UPDATE OF endpoint ON {schema}.dead_letters
            FOR EACH ROW WHEN (OLD.endpoint IS DISTINCT FROM NEW.endpoint) EXECUTE FUNCTION {schema}.dead_letters_counted();
        CREATE TRIGGER dead_letters_counted_truncate AFTER TRUNCATE ON {schema}.dead_letters
            FOR EACH STATEMENT EXECUTE FUNCTION {schema}.dead_letters_counted();

        INSERT INTO {schema}.dead_letter_counts (endpoint, slot, count)
        SELECT endpoint, 0, count(*) FROM {schema}.dead_letters GROUP BY endpoint;
        """;

    // Issue 9. The append function of migration 9 (same signature, same answers) with a shorter common case: when the UPDATE
    // moved every member's stream (each existed and met its expectation), one more statement probes for stored event ids and,
    // finding none, writes the events; the answers are the UPDATE's new versions and last positions, gathered in member order
    // by the statement that ran it. Migration 9 spread the moved rows over per-member arrays, filled seven more and checked
    // each member again, in PL/pgSQL loops around the same statements; a call of 16 single-event members to existing streams
    // now takes about a tenth less server time. Only the two arrays the caller gets are gathered in order (each ORDER BY in an
    // aggregate is a sort of its own, a few microseconds). The probe stays in a statement after the UPDATE, never in it: a
    // statement reads with the snapshot it started with, so a probe inside the locking statement would miss the events of a
    // racing retry whose lock it waited for. A stored id (in any stream), or a member not moved, leaves the short path
    // having written nothing, in the state migration 9 is in after its UPDATE, and migration 9's path runs on unchanged:
    // member for member the same checks and answers.
    private const string V11 = $$"""
        {{AppendEventsHead}}
            v_after bigint[];
            v_last bigint[];
            v_fast boolean;
        BEGIN
            -- Lock and move, in stream order, every existing stream whose member's expectation holds. The new versions and last
            -- positions come in member order (what the caller gets when every member moved), the rest in the order moved.
        {{AppendMoveStreams}}
                RETURNING u.m, s.version - u.n AS base, s.deleted_up_to, s.version, s.last_position)
            SELECT coalesce(array_agg(m), '{}'), coalesce(array_agg(base), '{}'), coalesce(array_agg(deleted_up_to), '{}'),
                   coalesce(array_agg(version ORDER BY m), '{}'), coalesce(array_agg(last_position ORDER BY m), '{}')
              INTO v_found_members, v_found_versions, v_found_deleted, v_after, v_last
              FROM moved;

            -- Every member moved: unless one of the event ids is stored anywhere, the events are written in the probe's
            -- statement (after the locks above, as migration 9 probed) and every member is appended. A stored id leaves
            -- this statement writing nothing and the streams moved, the state migration 9 is in after its UPDATE.
            IF cardinality(v_found_members) = v_n THEN
                WITH stored AS (
                    SELECT FROM {schema}.events ev WHERE ev.event_id = ANY (p_ids) LIMIT 1),
                inserted AS (
                    INSERT INTO {schema}.events (position, xid, stream, category, version, event_id, type, schema_version, time,
                                                 correlation_id, causation_id, user_id, partition_key, content_type, headers, body, recorded_at)
                    SELECT v_head | (p_first_ordinal + e.j - 1), pg_current_xact_id(), p_streams[e.m], p_categories[e.m],
                           v_after[e.m] - p_counts[e.m] + (e.j - p_first[e.m] + 1), e.id, e.type, e.schema_version, e.time,
                           e.correlation_id, e.causation_id, e.user_id, e.partition_key, e.content_type, e.headers, e.body, p_recorded_at
                      FROM unnest(p_ids, p_types, p_schema_versions, p_times, p_correlation_ids, p_causation_ids, p_user_ids,
                                  p_partition_keys, p_content_types, p_headers, p_bodies, p_members)
                           WITH ORDINALITY AS e(id, type, schema_version, time, correlation_id, causation_id, user_id, partition_key,
                                                content_type, headers, body, m, j)
                     WHERE NOT EXISTS (SELECT FROM stored))
                SELECT NOT EXISTS (SELECT FROM stored) INTO v_fast;
                IF v_fast THEN
                    o_status := array_fill(0, ARRAY[v_n]);
                    o_version := v_after;
                    o_position := v_last;
                    o_detail := array_fill(NULL::text, ARRAY[v_n]);
                    RETURN;
                END IF;
            END IF;

            v_moved := array_fill(false, ARRAY[v_n]);
            v_version := array_fill(-1::bigint, ARRAY[v_n]);
            v_deleted := array_fill(0::bigint, ARRAY[v_n]);
        {{AppendMarkMoved}}

        {{AppendAfterMove}}
        $fn$;
        """;

    // Migration 11's function with the probe of migration 12 (AppendProbeOwnStream): migration 11 took each stored id
    // for the first event of the call carrying it, so a retry grouped after an append of the same id to another stream found
    // no stored id of its own and wrote its events again (any) or failed as a conflict (no stream). Built from migration 11's
    // text, so the two differ only there.
    private static string V12 => V11.Replace(AppendProbeFirstCarrier, AppendProbeOwnStream, StringComparison.Ordinal);
}
