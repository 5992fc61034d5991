using Herald.Postgres.Internal;
using Herald.Postgres.Schema;

namespace Herald.Postgres.Transport;

/// <summary>
/// The queue's statements for one schema (migration 3). Times are parameters from the transport's <see cref="TimeProvider"/>,
/// never the server's clock, so a fake clock drives delays and leases. No write notifies inside its own transaction: after
/// every commit that can make a message claimable, the transport asks its <see cref="Notifications.CommitNotifier"/> to
/// notify the schema's queue channel (<see cref="Channel"/>) with the queue as payload.
/// </summary>
internal sealed class QueueSql
{
    /// <summary>The migration that creates the queue's tables.</summary>
    public const int Migration = 3;

    public QueueSql(string schema)
    {
        var s = Migrations.Quote(schema);
        Count =
            $"SELECT count(*) FILTER (WHERE visible_at <= $2 AND (lease_until IS NULL OR lease_until <= $2)), " +
            "count(*) FILTER (WHERE lease_until > $2), " +
            "count(*) FILTER (WHERE visible_at > $2 AND (lease_until IS NULL OR lease_until <= $2)) " +
            $"FROM {s}.queue_messages WHERE queue = $1";
        Probe = $"SELECT 1 FROM {s}.queue_messages LIMIT 0";
        Channel = schema + "_queue";

        // A group of sends, one element of each array per message, inserted in the order given (so in send order).
        InsertMany =
            $"INSERT INTO {s}.queue_messages (queue, {EnvelopeColumns.Names}, enqueued_at, visible_at) " +
            $"SELECT queue, {EnvelopeColumns.Names}, enqueued_at, visible_at " +
            "FROM unnest($1::text[], $2::uuid[], $3::text[], $4::int[], $5::timestamptz[], $6::text[], $7::text[], $8::text[], $9::text[], " +
            "$10::text[], $11::jsonb[], $12::bytea[], $13::timestamptz[], $14::timestamptz[]) WITH ORDINALITY " +
            $"AS m(queue, {EnvelopeColumns.Names}, enqueued_at, visible_at, ordinal) ORDER BY ordinal";

        // One statement: every bound queue gets its copy, or none does; returns the queues that got one.
        Publish =
            $"WITH inserted AS (INSERT INTO {s}.queue_messages (queue, {EnvelopeColumns.Names}, enqueued_at, visible_at) " +
            $"SELECT b.queue, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14 FROM {s}.queue_bindings b WHERE b.topic = $1 ORDER BY b.queue " +
            "RETURNING queue) " +
            "SELECT DISTINCT queue FROM inserted";

        Bind = $"INSERT INTO {s}.queue_bindings (topic, queue, bound_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING";

        // Visible, not leased (or its lease ran out), and no older message of its partition key visible (ready or in flight
        // anywhere): a key is handled one message at a time, in send order, across every consumer of every process. Rows
        // another claim holds locked are skipped, and a row another claim leased meanwhile fails the re-check of the WHERE
        // clause, so two consumers never both take a message. A lease that ran out counts as a delivery that failed.
        // The claimed ids are handed to the UPDATE as an array, so it finds them through the primary key whatever the plan:
        // joined to a CTE instead, the generic plan Npgsql's prepared statement ends up with hashes the whole table per claim.
        Claim =
            $"UPDATE {s}.queue_messages m SET lease_owner = $4, lease_until = $5, attempts = m.attempts + (m.lease_owner IS NOT NULL)::int " +
            $"WHERE m.id = ANY (ARRAY (SELECT c.id FROM {s}.queue_messages c " +
            "WHERE c.queue = $1 AND c.visible_at <= $2 AND (c.lease_until IS NULL OR c.lease_until <= $2) " +
            $"AND (c.partition_key IS NULL OR NOT EXISTS (SELECT 1 FROM {s}.queue_messages o " +
            "WHERE o.queue = $1 AND o.partition_key = c.partition_key AND o.id < c.id AND o.visible_at <= $2)) " +
            "ORDER BY c.visible_at, c.id LIMIT $3 FOR UPDATE OF c SKIP LOCKED)) " +
            "RETURNING m.id, m.visible_at, m.attempts, m.message_id, m.message_type, m.schema_version, m.time, m.correlation_id, m.causation_id, " +
            "m.user_id, m.partition_key, m.content_type, m.headers::text, m.body";
        NextVisible = $"SELECT min(visible_at) FROM {s}.queue_messages WHERE queue = $1 AND visible_at > $2";

        // Runs first in the claim's transaction. Without fresh statistics (a new table, a new queue, a backlog that built up
        // since the last ANALYZE) the planner believes a queue holds a few dozen rows, and reads and sorts every ready row of
        // it for each claim instead of walking the ready index in order and stopping after the batch: a claim then costs
        // time in proportion to the backlog. Local to the transaction, so nothing else on the connection is affected.
        ClaimPlanGuard = PlannerGuard.Sql;

        // Settlements act only under the claim that took the message: its owner and its attempts (always the last
        // parameter), which every later claim of the message changes (one by this same owner after the lease ran out too),
        // so a lost claim settles nothing.
        Ack = $"DELETE FROM {s}.queue_messages WHERE id = $1 AND lease_owner = $2 AND attempts = $3";
        Nack =
            $"UPDATE {s}.queue_messages SET lease_owner = NULL, lease_until = NULL, attempts = attempts + 1, visible_at = $3, " +
            "headers = coalesce($4, headers) WHERE id = $1 AND lease_owner = $2 AND attempts = $5";
        DeadLetter =
            $"WITH moved AS (DELETE FROM {s}.queue_messages WHERE id = $1 AND lease_owner = $2 AND attempts = $6 RETURNING *) " +
            $"INSERT INTO {s}.queue_dead_letters (queue, {EnvelopeColumns.Names}, enqueued_at, delivery_attempt, reason, dead_lettered_at) " +
            $"SELECT queue, {EnvelopeColumns.Names.Replace("headers", "coalesce($5, headers)", StringComparison.Ordinal)}, enqueued_at, attempts + 1, $3, $4 FROM moved";
        // Only the claims the consumer still holds ($3, their ids): a message whose settlement gave up is the owner's row
        // still, and must come back when its lease runs out rather than be renewed for as long as the consumer has other work.
        // Only rows still leased to the owner: every settlement deletes the row or clears its owner, so a renewal that lands
        // after one (the consumer renews a claim until its settlement returns) changes nothing.
        Renew = $"UPDATE {s}.queue_messages SET lease_until = $2 WHERE id = ANY ($3) AND lease_owner = $1 RETURNING id, attempts";
        Release = $"UPDATE {s}.queue_messages SET lease_owner = NULL, lease_until = NULL WHERE id = $1 AND lease_owner = $2 AND attempts = $3";
        ReleaseAll = $"UPDATE {s}.queue_messages SET lease_owner = NULL, lease_until = NULL WHERE lease_owner = $1";

        // The envelope from column 3, as a claim returns it, so a dead letter is read (or salvaged) as a claimed message is.
        ReadDeadLetters =
            $"SELECT id, reason, dead_lettered_at, {EnvelopeColumns.Names.Replace("headers", "headers::text", StringComparison.Ordinal)}, delivery_attempt " +
            $"FROM {s}.queue_dead_letters WHERE queue = $1 AND id > $2 ORDER BY id LIMIT $3";
        DeleteDeadLetter = $"DELETE FROM {s}.queue_dead_letters WHERE id = $1";
    }

    /// <summary>The notification channel of the schema's queues; the payload is the queue name.</summary>
    public string Channel { get; }

    public string InsertMany { get; }

    public string Publish { get; }

    public string Bind { get; }

    public string Claim { get; }

    public string NextVisible { get; }

    public string ClaimPlanGuard { get; }

    public string Ack { get; }

    public string Nack { get; }

    public string DeadLetter { get; }

    public string Renew { get; }

    public string Release { get; }

    public string ReleaseAll { get; }

    /// <summary>$1 queue, $2 after id, $3 limit: id, reason, time, the envelope's columns and the delivery attempt.</summary>
    public string ReadDeadLetters { get; }

    public string DeleteDeadLetter { get; }

    /// <summary>The queue's messages by state ($1 queue, $2 now): ready, leased, delayed (the queue gauge).</summary>
    public string Count { get; }

    /// <summary>A round trip to the queue's table that reads nothing (the health check's probe).</summary>
    public string Probe { get; }
}
