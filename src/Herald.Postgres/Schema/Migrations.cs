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
    ];

    public static int Latest => All[^1].Version;

    // Positions: ((xid8 of the writing transaction + position_offset) << 20) | ordinal within that transaction (ADR 0001).
    // The functions return a status instead of raising, so a conflicting member of a grouped commit writes nothing and
    // fails nobody else, without a subtransaction per member.
    private const string V1 = """
        CREATE TABLE {schema}.log_settings (
            id int PRIMARY KEY CHECK (id = 1),
            position_offset bigint NOT NULL CHECK (position_offset >= 0)
        );
        INSERT INTO {schema}.log_settings (id, position_offset) VALUES (1, 0);

        CREATE TABLE {schema}.streams (
            stream text PRIMARY KEY,
            category text NOT NULL,
            version bigint NOT NULL,
            last_position bigint NOT NULL,
            deleted_up_to bigint NOT NULL DEFAULT 0,
            deletions bigint[] NOT NULL DEFAULT '{}'
        );

        CREATE TABLE {schema}.events (
            position bigint PRIMARY KEY,
            xid xid8 NOT NULL,
            stream text NOT NULL,
            category text NOT NULL,
            version bigint NOT NULL,
            event_id uuid NOT NULL,
            type text NOT NULL,
            schema_version int NOT NULL,
            time timestamptz NOT NULL,
            correlation_id text,
            causation_id text,
            user_id text,
            partition_key text,
            content_type text NOT NULL,
            headers jsonb,
            body bytea NOT NULL,
            recorded_at timestamptz NOT NULL,
            deleted boolean NOT NULL DEFAULT false,
            CONSTRAINT events_stream_version UNIQUE (stream, version)
        );
        CREATE INDEX events_stream_event_id ON {schema}.events (stream, event_id);
        CREATE INDEX events_category_position ON {schema}.events (category, position) WHERE NOT deleted;

        CREATE TABLE {schema}.checkpoints (
            subscription_id text PRIMARY KEY,
            position bigint NOT NULL,
            updated_at timestamptz NOT NULL
        );

        CREATE TABLE {schema}.snapshots (
            stream text PRIMARY KEY,
            version bigint NOT NULL,
            state_type text NOT NULL,
            schema_version int NOT NULL,
            state bytea NOT NULL,
            created_at timestamptz NOT NULL
        );

        -- o_status: 0 appended, 1 idempotent retry (nothing written), 2 expected version not met, 3 idempotency conflict (o_detail).
        -- p_expected: -2 any, -1 no stream, -4 stream exists, >= 1 exact.
        CREATE FUNCTION {schema}.append_events(
            p_stream text, p_category text, p_expected bigint, p_first_ordinal int, p_offset bigint, p_recorded_at timestamptz,
            p_ids uuid[], p_types text[], p_schema_versions int[], p_times timestamptz[], p_correlation_ids text[],
            p_causation_ids text[], p_user_ids text[], p_partition_keys text[], p_content_types text[], p_headers jsonb[],
            p_bodies bytea[],
            OUT o_status int, OUT o_version bigint, OUT o_position bigint, OUT o_detail text)
        LANGUAGE plpgsql AS $fn$
        DECLARE
            v_stream {schema}.streams%ROWTYPE;
            v_count int := cardinality(p_ids);
            v_current bigint;
            v_found_id uuid;
            v_start bigint;
            v_place bigint;
            v_event record;
            v_xid bigint;
        BEGIN
            SELECT * INTO v_stream FROM {schema}.streams WHERE stream = p_stream FOR UPDATE;
            IF NOT FOUND THEN
                -- Only NoStream and Any may start a stream; the others conflict without creating a row.
                IF p_expected NOT IN (-1, -2) THEN
                    o_status := 2; o_version := 0; RETURN;
                END IF;
                -- A racing creator makes this wait for its commit; the locked re-read then sees its row.
                INSERT INTO {schema}.streams (stream, category, version, last_position) VALUES (p_stream, p_category, 0, 0)
                    ON CONFLICT (stream) DO NOTHING;
                SELECT * INTO v_stream FROM {schema}.streams WHERE stream = p_stream FOR UPDATE;
            END IF;

            v_current := CASE WHEN v_stream.version > v_stream.deleted_up_to THEN v_stream.version ELSE 0 END;

            IF v_stream.version > 0 THEN
                SELECT e.event_id, e.version INTO v_found_id, v_start
                    FROM {schema}.events e WHERE e.stream = p_stream AND e.event_id = ANY (p_ids)
                    ORDER BY (e.event_id = p_ids[1]) DESC LIMIT 1;
                IF FOUND THEN
                    IF v_found_id <> p_ids[1] THEN
                        o_status := 3; o_version := v_current;
                        o_detail := format('The event id %s is already stored at version %s, but not as part of the same append.', v_found_id, v_start);
                        RETURN;
                    END IF;
                    v_place := CASE
                        WHEN p_expected >= 1 THEN p_expected + 1
                        WHEN p_expected = -1 THEN
                            CASE WHEN v_start = 1 OR (v_start - 1) = ANY (v_stream.deletions) THEN v_start ELSE -1 END
                        ELSE v_start END;
                    IF v_place <> v_start THEN
                        o_status := 3; o_version := v_current;
                        o_detail := format('The event id %s is already stored at version %s, not where this append would put it.', p_ids[1], v_start);
                        RETURN;
                    END IF;
                    FOR i IN 1 .. v_count LOOP
                        SELECT e.event_id, e.type, e.body, e.position INTO v_event
                            FROM {schema}.events e WHERE e.stream = p_stream AND e.version = v_start + i - 1;
                        IF NOT FOUND OR v_event.event_id <> p_ids[i] THEN
                            o_status := 3; o_version := v_current;
                            o_detail := 'Some of the event ids were already appended, but not as this same batch.';
                            RETURN;
                        END IF;
                        IF v_event.type <> p_types[i] OR v_event.body <> p_bodies[i] THEN
                            o_status := 3; o_version := v_current;
                            o_detail := format('The event id %s is already stored with another type or body.', p_ids[i]);
                            RETURN;
                        END IF;
                    END LOOP;
                    o_status := 1; o_version := v_start + v_count - 1; o_position := v_event.position;
                    RETURN;
                END IF;
            END IF;

            IF NOT (p_expected = -2 OR (p_expected = -1 AND v_current = 0) OR (p_expected = -4 AND v_current > 0)
                    OR (p_expected >= 1 AND v_current = p_expected)) THEN
                o_status := 2; o_version := v_current; RETURN;
            END IF;

            v_xid := pg_current_xact_id()::text::bigint;
            INSERT INTO {schema}.events (position, xid, stream, category, version, event_id, type, schema_version, time,
                                         correlation_id, causation_id, user_id, partition_key, content_type, headers, body, recorded_at)
            SELECT ((v_xid + p_offset) << 20) | (p_first_ordinal + u.i - 1), pg_current_xact_id(), p_stream, p_category,
                   v_stream.version + u.i, u.id, u.type, u.schema_version, u.time, u.correlation_id, u.causation_id, u.user_id,
                   u.partition_key, u.content_type, u.headers, u.body, p_recorded_at
              FROM unnest(p_ids, p_types, p_schema_versions, p_times, p_correlation_ids, p_causation_ids, p_user_ids,
                          p_partition_keys, p_content_types, p_headers, p_bodies)
                   WITH ORDINALITY AS u(id, type, schema_version, time, correlation_id, causation_id, user_id, partition_key,
                                        content_type, headers, body, i);
            o_position := ((v_xid + p_offset) << 20) | (p_first_ordinal + v_count - 1);
            o_version := v_stream.version + v_count;
            UPDATE {schema}.streams SET version = o_version, last_position = o_position WHERE stream = p_stream;
            -- Delivered at commit, once per transaction however many appends it holds.
            PERFORM pg_notify('{channel}', '');
            o_status := 0;
        END
        $fn$;

        -- o_status: 0 deleted (or nothing to delete), 2 expected version not met; o_actual: the version before.
        CREATE FUNCTION {schema}.delete_stream(p_stream text, p_expected bigint, OUT o_status int, OUT o_actual bigint)
        LANGUAGE plpgsql AS $fn$
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

    /// <summary>The migration's SQL for a schema (already validated, so quoting cannot be escaped).</summary>
    public static string Render(Migration migration, string schema) =>
        migration.Sql.Replace("{schema}", Quote(schema), StringComparison.Ordinal).Replace("{channel}", ChannelFor(schema), StringComparison.Ordinal);

    /// <summary>The schema name as a quoted identifier.</summary>
    public static string Quote(string schema) => "\"" + schema + "\"";

    /// <summary>The notification channel appends in the schema signal on.</summary>
    public static string ChannelFor(string schema) => schema + "_events";
}
