using System.Text.Json;
using Herald.EventSourcing;
using Herald.Postgres.EventSourcing;
using Herald.Postgres.Internal;
using Herald.Postgres.Projections;
using Herald.Postgres.Reliability;
using Herald.Postgres.Sagas;
using Herald.Postgres.Schema;
using Herald.Postgres.Transport;
using Herald.Reliability.DeadLetters;
using Herald.Sagas;
using Npgsql;
using NpgsqlTypes;

namespace Herald.Postgres.Tests.Schema;

/// <summary>
/// Tables filled without ANALYZE and with autovacuum off, so the planner has no statistics, as on a young or fast-growing
/// store (issue 16). Loaded once for the class.
/// </summary>
public sealed class UnanalyzedSchema : IAsyncLifetime
{
    public const int Events = 100_000;
    public const int Rows = 50_000;

    public string Name { get; } = PostgresTestDatabase.NewSchema();

    internal PostgresEventStore Store { get; private set; } = null!;

    internal PostgresQueueTransport Queue { get; private set; } = null!;

    public string Quoted => Migrations.Quote(Name);

    public async Task InitializeAsync()
    {
        Store = await PostgresEventStore.CreateAsync(PostgresTestDatabase.ConnectionString, new PostgresStoreOptions { Schema = Name });
        Queue = (PostgresQueueTransport)await PostgresQueueTransportFactory.CreateAsync(PostgresTestDatabase.ConnectionString, o => o.Schema = Name);
        var s = Quoted;
        await PostgresTestDatabase.ExecuteAsync($"""
            ALTER TABLE {s}.events SET (autovacuum_enabled = false);
            ALTER TABLE {s}.streams SET (autovacuum_enabled = false);
            ALTER TABLE {s}.checkpoints SET (autovacuum_enabled = false);
            ALTER TABLE {s}.snapshots SET (autovacuum_enabled = false);
            ALTER TABLE {s}.outbox SET (autovacuum_enabled = false);
            ALTER TABLE {s}.dead_letters SET (autovacuum_enabled = false);
            ALTER TABLE {s}.sagas SET (autovacuum_enabled = false);
            ALTER TABLE {s}.queue_dead_letters SET (autovacuum_enabled = false);
            ALTER TABLE {s}.queue_messages SET (autovacuum_enabled = false);
            ALTER TABLE {s}.dead_letter_counts SET (autovacuum_enabled = false);
            CREATE TABLE {s}."rm_docs_g1" (id text COLLATE "C" PRIMARY KEY, data jsonb NOT NULL) WITH (autovacuum_enabled = false);
            CREATE INDEX "rm_docs_g1_data" ON {s}."rm_docs_g1" USING gin (data jsonb_path_ops);

            -- Ten events per transaction id; streams of a hundred events, a quarter of them in the category 'order'.
            INSERT INTO {s}.events (position, xid, stream, category, version, event_id, type, schema_version, time, content_type, body, recorded_at)
            SELECT ((1 + g / 10)::bigint << 20) | (g % 10), '1'::xid8,
                   CASE WHEN g % 4 = 0 THEN 'order-' ELSE 'acct-' END || (g % 1000), CASE WHEN g % 4 = 0 THEN 'order' ELSE 'acct' END,
                   g / 1000 + 1, gen_random_uuid(), CASE WHEN g % 3 = 0 THEN 'Credited' ELSE 'Debited' END, 1, now(), 'application/json', '\x7b7d', now()
              FROM generate_series(0, {Events - 1}) g;
            INSERT INTO {s}.checkpoints SELECT 'sub-' || g, g, now() FROM generate_series(0, {Rows - 1}) g;
            INSERT INTO {s}.snapshots SELECT 'acct-' || g, 1, 't', 1, '\x00', now() FROM generate_series(0, {Rows - 1}) g;
            INSERT INTO {s}.outbox (id, destination_kind, destination, created_at, outbox_partition_key, sent_at, message_id, message_type, schema_version, time, content_type, body, delivery_attempt)
            SELECT gen_random_uuid(), 'Queue', 'q', now(), CASE WHEN g % 2 = 0 THEN 'k' || (g % 50) END, CASE WHEN g < {Rows / 2} THEN now() END,
                   gen_random_uuid(), 't', 1, now(), 'application/json', '\x7b7d', 1
              FROM generate_series(0, {Rows - 1}) g;
            INSERT INTO {s}.dead_letters (id, endpoint, cause, error_type, error_message, fingerprint, first_failure, last_failure, attempt_count, retry_count,
                                         message_id, message_type, schema_version, time, content_type, body, delivery_attempt)
            SELECT gen_random_uuid(), 'ep-' || (g % 10), 'Exhausted', 'E', 'm', 'f' || (g % 100), now(), now(), 1, 0,
                   gen_random_uuid(), 't' || (g % 20), 1, now(), 'application/json', '\x7b7d', 1
              FROM generate_series(0, {Rows - 1}) g;
            INSERT INTO {s}.sagas (saga_type, id, status, current_step, completed_steps, data, created_at, updated_at, version)
            SELECT 'S' || (g % 5), 'id-' || g, CASE WHEN g % 10 = 0 THEN 'Running' ELSE 'Completed' END, 0, ARRAY[]::text[], '\x00', now(), now(), 1
              FROM generate_series(0, {Rows - 1}) g;
            INSERT INTO {s}.queue_dead_letters (queue, message_id, message_type, schema_version, time, content_type, body, enqueued_at, delivery_attempt, reason, dead_lettered_at)
            SELECT 'q' || (g % 3), gen_random_uuid(), 't', 1, now(), 'application/json', '\x7b7d', now(), 1, 'r', now()
              FROM generate_series(0, {Rows - 1}) g;
            INSERT INTO {s}.queue_messages (queue, message_id, message_type, schema_version, time, content_type, body, enqueued_at, visible_at)
            SELECT 'q' || (g % 3), gen_random_uuid(), 't', 1, now(), 'application/json', '\x7b7d', now(), now() - make_interval(secs => g)
              FROM generate_series(0, {Rows - 1}) g;
            INSERT INTO {s}."rm_docs_g1" SELECT 'doc-' || g, jsonb_build_object('status', CASE WHEN g % 10 = 0 THEN 'open' ELSE 'closed' END)
              FROM generate_series(0, {Rows - 1}) g;
            """);
    }

    public async Task DisposeAsync()
    {
        await Queue.DisposeAsync();
        await Store.DisposeAsync();
        await PostgresTestDatabase.DropSchemaAsync(Name);
    }
}

/// <summary>
/// Issue 16: every read and claim path walks an index in the order it returns rows and stops after its page, on tables the
/// planner has no statistics for. Each test explains the statement the adapter sends, as it sends it (behind the same
/// planner guard where the adapter uses one).
/// </summary>
public sealed class PlanWithoutStatisticsTests(UnanalyzedSchema schema) : IClassFixture<UnanalyzedSchema>
{
    private const int Page = 8000;
    private static readonly long Middle = (1L + (UnanalyzedSchema.Events / 20)) << 20;

    private EventStoreSql Sql => new(schema.Name, 0);

    [Fact]
    public async Task TheTablesReallyHaveNoStatistics()
    {
        var analyzed = await PostgresTestDatabase.ScalarAsync<long>(
            $"SELECT count(*) FROM pg_stat_user_tables WHERE schemaname = '{schema.Name}' AND (last_analyze IS NOT NULL OR last_autoanalyze IS NOT NULL)");
        var withStats = await PostgresTestDatabase.ScalarAsync<long>($"SELECT count(*) FROM pg_stats WHERE schemaname = '{schema.Name}'");
        Assert.Equal(0, analyzed);
        Assert.Equal(0, withStats);
    }

    [Fact]
    public async Task AllForward_FromTheMiddle_WalksThePrimaryKey()
    {
        var plan = await ExplainAsync(Sql.ReadAll(null), PostgresEventStore.ReadAllParameters(Middle, Page, null), guarded: true);
        plan.AssertOrderedIndexScan("events_pkey");
    }

    [Fact]
    public async Task AllForward_FromZero_AsACatchUpSubscriptionStarts_WalksThePrimaryKey()
    {
        var plan = await ExplainAsync(Sql.ReadAll(null), PostgresEventStore.ReadAllParameters(0, Page, null), guarded: true);
        plan.AssertOrderedIndexScan("events_pkey");
    }

    [Fact]
    public async Task AllByCategory_WalksTheCategoryIndex()
    {
        var filter = EventFilter.ForCategory("order");
        var plan = await ExplainAsync(Sql.ReadAll(filter), PostgresEventStore.ReadAllParameters(Middle, Page, filter), guarded: true);
        plan.AssertOrderedIndexScan("events_category_position");
    }

    [Fact]
    public async Task AllByType_WalksThePrimaryKeyAndFilters()
    {
        var filter = EventFilter.ForEventTypes("Credited");
        var plan = await ExplainAsync(Sql.ReadAll(filter), PostgresEventStore.ReadAllParameters(Middle, Page, filter), guarded: true);
        plan.AssertOrderedIndexScan("events_pkey");
    }

    [Fact]
    public async Task AllByCategoryAndType_WalksTheCategoryIndex()
    {
        var filter = new EventFilter { Category = "order", EventTypes = ["Credited"] };
        var plan = await ExplainAsync(Sql.ReadAll(filter), PostgresEventStore.ReadAllParameters(Middle, Page, filter), guarded: true);
        plan.AssertOrderedIndexScan("events_category_position");
    }

    [Fact]
    public async Task Head_FindsTheLastPositionThroughThePrimaryKey()
    {
        var plan = await ExplainAsync(Sql.Head, [], guarded: false);
        plan.AssertOrderedIndexScan("events_pkey");
    }

    [Fact]
    public async Task StreamForward_WalksTheStreamVersionIndex()
    {
        var plan = await ExplainAsync(Sql.ReadStreamForward, PostgresEventStore.ReadStreamParameters("acct-1", 1, Page), guarded: true);
        plan.AssertOrderedIndexScan("events_stream_version");
    }

    [Fact]
    public async Task StreamBackward_WalksTheStreamVersionIndexBackward()
    {
        var plan = await ExplainAsync(Sql.ReadStreamBackward, PostgresEventStore.ReadStreamParameters("acct-1", long.MaxValue, Page), guarded: true);
        plan.AssertOrderedIndexScan("events_stream_version");
        Assert.Contains(plan.Nodes, n => n.Direction == "Backward");
    }

    [Fact]
    public async Task Checkpoint_IsOneProbeOfThePrimaryKey()
    {
        var plan = await ExplainAsync(Sql.GetCheckpoint, [Text("sub-7")], guarded: false);
        plan.AssertOrderedIndexScan("checkpoints_pkey");
    }

    [Fact]
    public async Task Snapshot_IsOneProbeOfThePrimaryKey()
    {
        var plan = await ExplainAsync(Sql.LoadSnapshot, [Text("acct-7")], guarded: false);
        plan.AssertOrderedIndexScan("snapshots_pkey");
    }

    [Fact]
    public async Task OutboxRelayFetch_WalksThePendingIndex()
    {
        var outbox = new PostgresOutboxStore(schema.Store);
        var plan = await ExplainAsync(outbox.FetchSql(due: false), [new NpgsqlParameter<int> { TypedValue = 100 }], guarded: true);
        plan.AssertOrderedIndexScan("outbox_pending");
    }

    [Fact]
    public async Task OutboxRelayFetchDue_WalksThePendingIndex()
    {
        var outbox = new PostgresOutboxStore(schema.Store);
        NpgsqlParameter[] parameters = [new NpgsqlParameter<int> { TypedValue = 100 }, new NpgsqlParameter<DateTimeOffset> { TypedValue = DateTimeOffset.UtcNow }];
        var plan = await ExplainAsync(outbox.FetchSql(due: true), parameters, guarded: true);
        plan.AssertOrderedIndexScan("outbox_pending");
    }

    [Fact]
    public async Task OutboxCount_ReadsOnlyThePendingIndex()
    {
        var outbox = new PostgresOutboxStore(schema.Store);
        var plan = await ExplainAsync(outbox.CountSql, [], guarded: true);
        plan.AssertOrderedIndexScan("outbox_pending");
    }

    [Fact]
    public async Task DeadLetterList_WalksThePrimaryKey()
    {
        var plan = await ExplainAsync(DeadLetters().ListSql, [.. PostgresDeadLetterStore.Filters(DeadLetterQuery.All), new NpgsqlParameter<int> { TypedValue = 100 }], guarded: true);
        plan.AssertOrderedIndexScan("dead_letters_pkey");
    }

    [Fact]
    public async Task DeadLetterList_ByEndpoint_AfterAnId_WalksTheEndpointIndex()
    {
        var query = new DeadLetterQuery { Endpoint = "ep-3", After = Guid.CreateVersion7() };
        var plan = await ExplainAsync(DeadLetters().ListSql, [.. PostgresDeadLetterStore.Filters(query), new NpgsqlParameter<int> { TypedValue = 100 }], guarded: true);
        plan.AssertOrderedIndexScan("dead_letters_endpoint_id");
    }

    [Fact]
    public async Task DeadLetterCount_ByEndpointAndMore_ReadsTheEndpointIndex()
    {
        var query = new DeadLetterQuery { Endpoint = "ep-3", Fingerprint = "f3" };
        var plan = await ExplainAsync(DeadLetters().CountSql, PostgresDeadLetterStore.Filters(query), guarded: true);
        plan.AssertOrderedIndexScan("dead_letters_endpoint_id");
    }

    [Fact]
    public async Task DeadLetterCount_ByEndpoint_ProbesTheCountsAndReadsNoDeadLetter()
    {
        var plan = await ExplainAsync(DeadLetters().CountEndpointSql, [Text("ep-3")], guarded: true);
        plan.AssertOrderedIndexScan("dead_letter_counts_pkey");
        Assert.DoesNotContain(plan.Nodes, n => n.Relation == "dead_letters");
    }

    [Fact]
    public async Task DeadLetterCount_OfAll_ReadsOnlyTheCounts()
    {
        var plan = await ExplainAsync(DeadLetters().CountAllSql, [], guarded: true);
        Assert.Contains(plan.Nodes, n => n.Relation == "dead_letter_counts");
        Assert.DoesNotContain(plan.Nodes, n => n.Relation == "dead_letters");
    }

    [Fact]
    public async Task DeadLetterPurge_ByEndpoint_WalksTheEndpointIndex()
    {
        var query = new DeadLetterQuery { Endpoint = "ep-3", Limit = 100 };
        var plan = await ExplainAsync(DeadLetters().DeleteManySql, [.. PostgresDeadLetterStore.Filters(query), new NpgsqlParameter<int> { TypedValue = 100 }], guarded: true);
        plan.AssertOrderedIndexScan("dead_letters_endpoint_id");
    }

    [Fact]
    public async Task QueueClaim_WalksTheReadyIndexInOrder()
    {
        NpgsqlParameter[] parameters =
        [
            Text("q1"), new NpgsqlParameter<DateTimeOffset> { TypedValue = DateTimeOffset.UtcNow }, new NpgsqlParameter<int> { TypedValue = 17 },
            new NpgsqlParameter<Guid> { TypedValue = Guid.CreateVersion7() }, new NpgsqlParameter<DateTimeOffset> { TypedValue = DateTimeOffset.UtcNow.AddSeconds(30) },
        ];
        var plan = await ExplainAsync(schema.Queue.Sql.Claim, parameters, guarded: true);
        plan.AssertOrderedIndexScan("queue_messages_ready");
    }

    [Fact]
    public async Task SagaList_Unfinished_WalksThePrimaryKey()
    {
        var plan = await ExplainAsync(Sagas().ListSql, PostgresSagaStore.ListParameters(SagaQuery.Unfinished() with { After = ("S1", "id-5") }), guarded: true);
        plan.AssertOrderedIndexScan("sagas_pkey");
    }

    [Fact]
    public async Task SagaList_ByType_WalksThePrimaryKey()
    {
        var plan = await ExplainAsync(Sagas().ListSql, PostgresSagaStore.ListParameters(new SagaQuery { SagaType = "S2" }), guarded: true);
        plan.AssertOrderedIndexScan("sagas_pkey");
    }

    [Fact]
    public async Task ReadModelPage_WalksThePrimaryKey()
    {
        var table = new PostgresReadModelStore.TableSql(schema.Quoted, "docs", 1);
        var first = await ExplainAsync(table.Query(after: false, where: false), [Text(null), new NpgsqlParameter<int> { TypedValue = 100 }], guarded: false);
        var next = await ExplainAsync(table.Query(after: true, where: false), [Text("doc-5"), new NpgsqlParameter<int> { TypedValue = 100 }], guarded: false);
        first.AssertOrderedIndexScan("rm_docs_g1_pkey");
        next.AssertOrderedIndexScan("rm_docs_g1_pkey");
    }

    [Fact]
    public async Task QueueDeadLetterList_WalksTheQueueIndex()
    {
        // A page after a row id (the drain's keyset), as the listing and the drain read it.
        var plan = await ExplainAsync(
            schema.Queue.Sql.ReadDeadLetters, [Text("q1"), new NpgsqlParameter<long> { TypedValue = 1_000 }, new NpgsqlParameter<int> { TypedValue = 100 }], guarded: true);
        plan.AssertOrderedIndexScan("queue_dead_letters_queue");
    }

    private PostgresDeadLetterStore DeadLetters() => new(schema.Store);

    private PostgresSagaStore Sagas() => new(schema.Store);

    private static NpgsqlParameter Text(string? value) => new() { Value = (object?)value ?? DBNull.Value, NpgsqlDbType = NpgsqlDbType.Text };

    private static async Task<Plan> ExplainAsync(string sql, IEnumerable<NpgsqlParameter> parameters, bool guarded)
    {
        await using var connection = new NpgsqlConnection(PostgresTestDatabase.ConnectionString);
        await connection.OpenAsync();
        await using var batch = new NpgsqlBatch(connection);
        if (guarded)
        {
            batch.BatchCommands.Add(new NpgsqlBatchCommand(PlannerGuard.Sql));
        }

        var explain = new NpgsqlBatchCommand("EXPLAIN (FORMAT JSON) " + sql);
        foreach (var parameter in parameters)
        {
            explain.Parameters.Add(parameter);
        }

        batch.BatchCommands.Add(explain);
        await using var reader = await batch.ExecuteReaderAsync();
        if (guarded)
        {
            await reader.NextResultAsync();
        }

        await reader.ReadAsync();
        var json = reader.GetString(0);
        using var document = JsonDocument.Parse(json);
        var nodes = new List<PlanNode>();
        Collect(document.RootElement[0].GetProperty("Plan"), nodes);
        return new Plan(json, nodes);
    }

    private static void Collect(JsonElement node, List<PlanNode> nodes)
    {
        nodes.Add(new PlanNode(
            node.GetProperty("Node Type").GetString()!,
            node.TryGetProperty("Index Name", out var index) ? index.GetString() : null,
            node.TryGetProperty("Scan Direction", out var direction) ? direction.GetString() : null,
            node.TryGetProperty("Relation Name", out var relation) ? relation.GetString() : null));
        if (node.TryGetProperty("Plans", out var children))
        {
            foreach (var child in children.EnumerateArray())
            {
                Collect(child, nodes);
            }
        }
    }

    private sealed record PlanNode(string Type, string? Index, string? Direction, string? Relation);

    private sealed record Plan(string Json, List<PlanNode> Nodes)
    {
        // The page comes straight off the index, in its order: no sort, no bitmap of the whole tail, no sequential scan.
        public void AssertOrderedIndexScan(string index)
        {
            Assert.True(
                Nodes.Exists(n => n.Type is "Index Scan" or "Index Only Scan" && n.Index == index),
                $"expected an index scan on {index}:\n{Json}");
            Assert.DoesNotContain(Nodes, n => n.Type is "Sort" or "Incremental Sort" or "Bitmap Heap Scan" or "Bitmap Index Scan" or "Seq Scan");
        }
    }
}
