using System.Buffers;
using System.Collections.Concurrent;
using System.Globalization;
using System.Text.Json;
using Herald.Internal;
using Herald.Persistence;
using Herald.Postgres.EventSourcing;
using Herald.Postgres.Internal;
using Herald.Postgres.Persistence;
using Herald.Postgres.Schema;
using Herald.Projections;
using Npgsql;
using NpgsqlTypes;

namespace Herald.Postgres.Projections;

/// <summary>
/// Read models in the event store's schema: one table per read-model table and generation (<c>rm_{table}_g{generation}</c>:
/// the id in byte order and the document as jsonb, with a GIN index serving string-equality queries), created on first write,
/// and the active generation of each read model in <c>read_models</c>. Changes are gathered in their unit of work and run at
/// its commit, in its transaction: per table, one statement loads every touched document <c>FOR UPDATE</c>, the changes run
/// in memory in order (several changes of one document compose), and one batch of statements writes the results back. So
/// the read model commits with the projection's checkpoint, concurrent units changing one document take turns, and a batch
/// of events costs a few round trips, not one per event. A unit of work writing a generation older than the active one fails
/// (a runner a rebuild left behind), and the retired generation's table is never made again.
/// </summary>
internal sealed class PostgresReadModelStore : IReadModelStore
{
    private readonly PostgresEventStore _store;
    private readonly string _schema;
    private readonly string _active;
    private readonly string _activeInTransaction;
    private readonly string _activeNow;
    private readonly string _activate;
    private readonly ConcurrentDictionary<(string Table, int Generation), TableSql> _sql = new();

    // Tables this store created or found: their first write skips the creation. A table dropped elsewhere leaves it here
    // until a write finds it missing.
    private readonly ConcurrentDictionary<string, bool> _created = new(StringComparer.Ordinal);

    public PostgresReadModelStore(PostgresEventStore store)
    {
        ArgumentNullException.ThrowIfNull(store);
        _store = store;
        _schema = Migrations.Quote(store.Schema);
        var registry = _schema + ".read_models";

        // The active generation and whether its table exists, in one statement ($2: the table's name up to the generation).
        // Both in the statement's snapshot: pg_class scanned as a table, not to_regclass, which asks the catalog as it is
        // when it runs. A switch and the old generation's drop committed between the snapshot and that call made it answer
        // "the old generation, no table", and the read returned nothing. Now the old table is found, and reading it after
        // its drop fails, which looks the generation up again.
        _active = $"SELECT g, EXISTS (SELECT FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace " +
            "WHERE n.nspname = $3::text AND c.relname = ($2::text || g)::name) " +
            $"FROM (SELECT COALESCE((SELECT active_generation FROM {registry} WHERE table_name = $1), 1) AS g) AS active";
        _activeInTransaction = $"SELECT active_generation FROM {registry} WHERE table_name = $1 FOR SHARE";
        _activeNow = $"SELECT active_generation FROM {registry} WHERE table_name = $1";
        _activate = $"INSERT INTO {registry} (table_name, active_generation, activated_at) VALUES ($1, $2, $3) " +
            "ON CONFLICT (table_name) DO UPDATE SET active_generation = EXCLUDED.active_generation, activated_at = EXCLUDED.activated_at";
    }

    public async ValueTask<string?> GetAsync(string table, string id, CancellationToken cancellationToken = default)
    {
        ReadModelNames.Validate(table);
        ArgumentNullException.ThrowIfNull(id);
        if (StorableReadModelWrites.NoDocumentHolds(id))
        {
            // No document can have it (writes refuse it), and asking would fail with a bare 22021 (an encoding error).
            return null;
        }

        return await ReadActiveAsync(table, none: null, (connection, sql, token) => ReadDocumentAsync(connection, sql, id, token), cancellationToken).ConfigureAwait(false);
    }

    public async ValueTask<string?> GetAsync(string table, int generation, string id, CancellationToken cancellationToken = default)
    {
        ReadModelNames.Validate(table);
        ReadModelNames.ValidateGeneration(generation);
        ArgumentNullException.ThrowIfNull(id);
        if (StorableReadModelWrites.NoDocumentHolds(id))
        {
            return null;
        }

        await using var connection = await _store.OpenStartedAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            return await ReadDocumentAsync(connection, Sql(table, generation), id, cancellationToken).ConfigureAwait(false);
        }
        catch (PostgresException ex) when (ex.SqlState == PostgresErrorCodes.UndefinedTable)
        {
            // Not made yet (nothing written to it), or dropped: no document.
            return null;
        }
    }

    public async ValueTask<IReadOnlyList<ReadModelDocument>> QueryAsync(string table, ReadModelQuery query, CancellationToken cancellationToken = default)
    {
        ReadModelNames.Validate(table);
        ReadModelNames.Validate(query);
        if (query.Where.Values.Any(StorableReadModelWrites.NoDocumentHolds))
        {
            // jsonb holds no U+0000 nor half of a surrogate pair, so no document matches (and the containment would fail).
            return [];
        }

        var afterId = query.AfterId is { } after ? NulText.BeforeNul(after) : null;
        var containment = query.Where.Count > 0 ? Containment(query.Where) : null;
        return await ReadActiveAsync<IReadOnlyList<ReadModelDocument>>(table, none: [], async (connection, sql, token) =>
        {
            await using var command = new NpgsqlCommand(sql.Query(afterId is not null, containment is not null), connection);
            command.Parameters.Add(EnvelopeColumns.Text(afterId));
            command.Parameters.Add(EnvelopeColumns.Int(query.Limit));
            if (containment is not null)
            {
                command.Parameters.Add(new NpgsqlParameter<string> { TypedValue = containment, NpgsqlDbType = NpgsqlDbType.Jsonb });
            }

            await using var reader = await command.ExecuteReaderAsync(token).ConfigureAwait(false);
            var documents = new List<ReadModelDocument>();
            while (await reader.ReadAsync(token).ConfigureAwait(false))
            {
                documents.Add(new ReadModelDocument(reader.GetString(0), reader.GetString(1)));
            }

            return documents;
        }, cancellationToken).ConfigureAwait(false);
    }

    public async ValueTask UpdateAsync(string table, int generation, string id, Func<string?, string?> change, IUnitOfWork unitOfWork, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(id);
        NulText.ThrowIfHeld(id, "read-model document id", nameof(id));
        change = ReadModelNames.ValidateUpdate(table, generation, id, change);
        var own = _store.Own(unitOfWork);
        var sql = Sql(table, generation);
        await EnsureCreatedAsync(sql, cancellationToken).ConfigureAwait(false);
        own.Defer(this, () => new PendingChanges(this)).Add(sql, id, change);
    }

    public async ValueTask<int> GetActiveGenerationAsync(string table, CancellationToken cancellationToken = default)
    {
        ReadModelNames.Validate(table);
        await using var connection = await _store.OpenStartedAsync(cancellationToken).ConfigureAwait(false);
        return (await ActiveAsync(connection, table, cancellationToken).ConfigureAwait(false)).Generation;
    }

    public ValueTask ResetGenerationAsync(string table, int generation, CancellationToken cancellationToken = default) =>
        DropStorageAsync(table, generation, "reset", recreate: true, cancellationToken);

    public async ValueTask ActivateGenerationAsync(string table, int generation, IUnitOfWork unitOfWork, CancellationToken cancellationToken = default)
    {
        ReadModelNames.Validate(table);
        ReadModelNames.ValidateGeneration(generation);
        await _store.Own(unitOfWork).ExecuteAsync(
            async (connection, transaction, token) =>
            {
                await using var command = new NpgsqlCommand(_activate, connection, transaction);
                command.Parameters.Add(EnvelopeColumns.Text(table));
                command.Parameters.Add(EnvelopeColumns.Int(generation));
                command.Parameters.Add(EnvelopeColumns.Time(_store.TimeProvider.GetUtcNow()));
                return await command.ExecuteNonQueryAsync(token).ConfigureAwait(false);
            },
            cancellationToken).ConfigureAwait(false);
    }

    public ValueTask DropGenerationAsync(string table, int generation, CancellationToken cancellationToken = default) =>
        DropStorageAsync(table, generation, "dropped", recreate: false, cancellationToken);

    // Drops the table of a generation that is not the active one, and with recreate makes it again, empty (with its index).
    private async ValueTask DropStorageAsync(string table, int generation, string verb, bool recreate, CancellationToken cancellationToken)
    {
        ReadModelNames.Validate(table);
        ReadModelNames.ValidateGeneration(generation);
        var sql = Sql(table, generation);
        _created.TryRemove(sql.Name, out _);
        await ChangeStorageAsync(sql, async (connection, transaction, token) =>
        {
            // FOR SHARE waits for a unit of work switching this read model to commit, so the answer is its outcome.
            var active = await ActiveInTransactionAsync(connection, transaction, _activeInTransaction, table, token).ConfigureAwait(false);
            StorableReadModelWrites.ThrowIfActive(table, generation, active, verb);

            await ExecuteAsync(connection, transaction, sql.Drop, token).ConfigureAwait(false);
            if (recreate)
            {
                await ExecuteAsync(connection, transaction, sql.Create, token).ConfigureAwait(false);
            }
        }, cancellationToken).ConfigureAwait(false);
        if (recreate)
        {
            _created.TryAdd(sql.Name, true);
        }
    }

    // A document that did not exist may be inserted meanwhile by a concurrent unit of work (FOR UPDATE locks no missing
    // row): the insert then finds it, once that unit committed, and its changes run again on what it wrote, so no update is
    // lost. A change may therefore run more than once; only its last result is written.
    private static async Task WriteAsync(NpgsqlConnection connection, NpgsqlTransaction transaction, TableSql sql, Dictionary<string, List<Func<string?, string?>>> documents, CancellationToken cancellationToken)
    {
        var pending = documents.Keys.ToArray();
        while (pending.Length > 0)
        {
            var current = new Dictionary<string, string>(pending.Length, StringComparer.Ordinal);
            await using (var select = new NpgsqlCommand(sql.SelectForUpdate, connection, transaction))
            {
                select.Parameters.Add(Texts(pending));
                await using var reader = await select.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
                while (await reader.ReadAsync(cancellationToken).ConfigureAwait(false))
                {
                    current[reader.GetString(0)] = reader.GetString(1);
                }
            }

            List<string>? updateIds = null, updateData = null, insertIds = null, insertData = null, deleteIds = null;
            foreach (var id in pending)
            {
                var found = current.GetValueOrDefault(id);
                var next = found;
                foreach (var change in documents[id])
                {
                    next = change(next);
                }

                if (found is not null)
                {
                    if (next is null)
                    {
                        (deleteIds ??= []).Add(id);
                    }
                    else
                    {
                        (updateIds ??= []).Add(id);
                        (updateData ??= []).Add(next);
                    }
                }
                else if (next is not null)
                {
                    (insertIds ??= []).Add(id);
                    (insertData ??= []).Add(next);
                }
            }

            // One round trip for every write of the table; the insert's RETURNING comes last in the batch.
            await using var batch = new NpgsqlBatch(connection, transaction);
            if (updateIds is not null)
            {
                batch.BatchCommands.Add(Command(sql.Update, Texts(updateIds), Documents(updateData!)));
            }

            if (deleteIds is not null)
            {
                batch.BatchCommands.Add(Command(sql.Delete, Texts(deleteIds)));
            }

            if (insertIds is not null)
            {
                batch.BatchCommands.Add(Command(sql.Insert, Texts(insertIds), Documents(insertData!)));
            }

            if (batch.BatchCommands.Count == 0)
            {
                return;
            }

            var inserted = new HashSet<string>(StringComparer.Ordinal);
            await using (var reader = await batch.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false))
            {
                do
                {
                    while (await reader.ReadAsync(cancellationToken).ConfigureAwait(false))
                    {
                        inserted.Add(reader.GetString(0));
                    }
                }
                while (await reader.NextResultAsync(cancellationToken).ConfigureAwait(false));
            }

            pending = insertIds is null ? [] : [.. insertIds.Where(id => !inserted.Contains(id))];
        }
    }

    private static NpgsqlBatchCommand Command(string sql, params NpgsqlParameter[] parameters)
    {
        var command = new NpgsqlBatchCommand(sql);
        command.Parameters.AddRange(parameters);
        return command;
    }

    private static NpgsqlParameter<string[]> Texts(IReadOnlyCollection<string> values) =>
        new() { TypedValue = [.. values], NpgsqlDbType = NpgsqlDbType.Array | NpgsqlDbType.Text };

    private static NpgsqlParameter<string[]> Documents(IReadOnlyCollection<string> values) =>
        new() { TypedValue = [.. values], NpgsqlDbType = NpgsqlDbType.Array | NpgsqlDbType.Jsonb };

    // The equality conditions as one JSON object, written by System.Text.Json so no value can change its shape.
    private static string Containment(IReadOnlyDictionary<string, string> where)
    {
        var buffer = new ArrayBufferWriter<byte>();
        using (var json = new Utf8JsonWriter(buffer))
        {
            json.WriteStartObject();
            foreach (var (property, value) in where)
            {
                json.WriteString(property, value);
            }

            json.WriteEndObject();
        }

        return System.Text.Encoding.UTF8.GetString(buffer.WrittenSpan);
    }

    private static async Task<string?> ReadDocumentAsync(NpgsqlConnection connection, TableSql sql, string id, CancellationToken cancellationToken)
    {
        await using var command = new NpgsqlCommand(sql.Get, connection);
        command.Parameters.Add(EnvelopeColumns.Text(id));
        return await command.ExecuteScalarAsync(cancellationToken).ConfigureAwait(false) as string;
    }

    private static async Task ExecuteAsync(NpgsqlConnection connection, NpgsqlTransaction transaction, string sql, CancellationToken cancellationToken)
    {
        await using var command = new NpgsqlCommand(sql, connection, transaction);
        await command.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
    }

    // Reads the active generation's table on one connection. A table dropped between finding it and reading it (a rebuild
    // swapped it out meanwhile) is looked up again: reads then go to the generation activated instead.
    private async Task<T> ReadActiveAsync<T>(string table, T none, Func<NpgsqlConnection, TableSql, CancellationToken, Task<T>> read, CancellationToken cancellationToken)
    {
        await using var connection = await _store.OpenStartedAsync(cancellationToken).ConfigureAwait(false);
        var (generation, exists) = await ActiveAsync(connection, table, cancellationToken).ConfigureAwait(false);
        while (exists)
        {
            try
            {
                return await read(connection, Sql(table, generation), cancellationToken).ConfigureAwait(false);
            }
            catch (PostgresException ex) when (ex.SqlState == PostgresErrorCodes.UndefinedTable)
            {
                var seen = generation;
                (generation, exists) = await ActiveAsync(connection, table, cancellationToken).ConfigureAwait(false);
                exists &= generation != seen;
            }
        }

        return none;
    }

    private async Task<(int Generation, bool Exists)> ActiveAsync(NpgsqlConnection connection, string table, CancellationToken cancellationToken)
    {
        await using var command = new NpgsqlCommand(_active, connection);
        command.Parameters.Add(EnvelopeColumns.Text(table));
        command.Parameters.Add(EnvelopeColumns.Text(TableSql.Prefix(table)));
        command.Parameters.Add(EnvelopeColumns.Text(_store.Schema));
        await using var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
        await reader.ReadAsync(cancellationToken).ConfigureAwait(false);
        return (reader.GetInt32(0), reader.GetBoolean(1));
    }

    private async Task EnsureCreatedAsync(TableSql sql, CancellationToken cancellationToken)
    {
        if (_created.ContainsKey(sql.Name))
        {
            return;
        }

        // Its own short transaction, committed before the unit of work writes: an empty table left by a rolled-back unit is
        // harmless, and the unit never holds the lock that orders creations. A table that exists is left alone, since even
        // CREATE ... IF NOT EXISTS needs the right to create in the schema, which an application role may not have.
        await ChangeStorageAsync(sql, async (connection, transaction, token) =>
        {
            // A runner a rebuild left behind: the retired generation's table, dropped (under this lock) once the switch
            // committed, is never made again.
            await ThrowIfRetiredAsync(connection, transaction, _activeInTransaction, sql, token).ConfigureAwait(false);
            await using (var exists = new NpgsqlCommand("SELECT to_regclass(format('%I.%I', $1::text, $2::text)) IS NOT NULL", connection, transaction))
            {
                exists.Parameters.Add(EnvelopeColumns.Text(_store.Schema));
                exists.Parameters.Add(EnvelopeColumns.Text(sql.Name));
                if ((bool)(await exists.ExecuteScalarAsync(token).ConfigureAwait(false))!)
                {
                    return;
                }
            }

            await ExecuteAsync(connection, transaction, sql.Create, token).ConfigureAwait(false);
        }, cancellationToken).ConfigureAwait(false);
        _created.TryAdd(sql.Name, true);
    }

    private async Task ThrowIfRetiredAsync(NpgsqlConnection connection, NpgsqlTransaction transaction, string activeSql, TableSql sql, CancellationToken cancellationToken)
    {
        var active = await ActiveInTransactionAsync(connection, transaction, activeSql, sql.Table, cancellationToken).ConfigureAwait(false);
        if (sql.Generation < active)
        {
            throw new ReadModelGenerationRetiredException(sql.Table, sql.Generation, active);
        }
    }

    private static async Task<int> ActiveInTransactionAsync(NpgsqlConnection connection, NpgsqlTransaction transaction, string activeSql, string table, CancellationToken cancellationToken)
    {
        await using var command = new NpgsqlCommand(activeSql, connection, transaction);
        command.Parameters.Add(EnvelopeColumns.Text(table));
        return await command.ExecuteScalarAsync(cancellationToken).ConfigureAwait(false) as int? ?? 1;
    }

    // Before a unit of work writes a generation's table: the table's advisory lock, shared, so a drop of it (which takes
    // the lock alone, once the switch committed) waits for this unit; then the active generation, read after the lock
    // (a statement of its own, so read committed takes its snapshot then). A retired generation fails the unit.
    private async Task GuardWriteAsync(NpgsqlConnection connection, NpgsqlTransaction transaction, TableSql sql, CancellationToken cancellationToken)
    {
        await using (var command = new NpgsqlCommand("SELECT pg_advisory_xact_lock_shared($1)", connection, transaction))
        {
            command.Parameters.Add(new NpgsqlParameter<long> { TypedValue = AdvisoryLockKey.ForReadModelTable(_store.Schema, sql.Name) });
            await command.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
        }

        await ThrowIfRetiredAsync(connection, transaction, _activeNow, sql, cancellationToken).ConfigureAwait(false);
    }

    // DDL on one generation's table, in a transaction of its own under an advisory lock: two sessions creating one table
    // at once would otherwise collide in the catalog, and a reset or drop must not interleave with a creation.
    private async Task ChangeStorageAsync(TableSql sql, Func<NpgsqlConnection, NpgsqlTransaction, CancellationToken, Task> change, CancellationToken cancellationToken)
    {
        await using var connection = await _store.OpenStartedAsync(cancellationToken).ConfigureAwait(false);
        await using var transaction = await connection.BeginTransactionAsync(cancellationToken).ConfigureAwait(false);
        await using (var command = new NpgsqlCommand("SELECT pg_advisory_xact_lock($1)", connection, transaction))
        {
            command.Parameters.Add(new NpgsqlParameter<long> { TypedValue = AdvisoryLockKey.ForReadModelTable(_store.Schema, sql.Name) });
            await command.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
        }

        await change(connection, transaction, cancellationToken).ConfigureAwait(false);
        await transaction.CommitAsync(cancellationToken).ConfigureAwait(false);
    }

    private TableSql Sql(string table, int generation) => _sql.GetOrAdd((table, generation), static (key, schema) => new TableSql(schema, key.Table, key.Generation), _schema);

    /// <summary>The changes one unit of work gathered, per table and document in the order they were made; run at its commit.</summary>
    private sealed class PendingChanges(PostgresReadModelStore store) : IDeferredWrites
    {
        private readonly Lock _gate = new();
        private readonly Dictionary<TableSql, Dictionary<string, List<Func<string?, string?>>>> _tables = [];

        public void Add(TableSql sql, string id, Func<string?, string?> change)
        {
            lock (_gate)
            {
                if (!_tables.TryGetValue(sql, out var documents))
                {
                    documents = new Dictionary<string, List<Func<string?, string?>>>(StringComparer.Ordinal);
                    _tables.Add(sql, documents);
                }

                if (!documents.TryGetValue(id, out var changes))
                {
                    changes = [];
                    documents.Add(id, changes);
                }

                changes.Add(change);
            }
        }

        public async Task FlushAsync(NpgsqlConnection connection, NpgsqlTransaction transaction, CancellationToken cancellationToken)
        {
            foreach (var (sql, documents) in _tables)
            {
                await store.GuardWriteAsync(connection, transaction, sql, cancellationToken).ConfigureAwait(false);
                try
                {
                    await WriteAsync(connection, transaction, sql, documents, cancellationToken).ConfigureAwait(false);
                }
                catch (PostgresException ex) when (ex.SqlState == PostgresErrorCodes.UndefinedTable)
                {
                    // Dropped by another store since this one created it: the next write creates it again.
                    store._created.TryRemove(sql.Name, out _);
                    throw;
                }
            }
        }
    }

    /// <summary>The statements on one generation's table; its name is built from a validated table name and a number.</summary>
    internal sealed class TableSql
    {
        // Schema-qualified and quoted, as statements name it.
        private readonly string _qualified;

        public TableSql(string schema, string table, int generation)
        {
            Table = table;
            Generation = generation;
            Name = Prefix(table) + generation.ToString(CultureInfo.InvariantCulture);
            var name = schema + "." + Migrations.Quote(Name);
            _qualified = name;

            // jsonb_path_ops indexes containment (@>) only, which is all a query asks, in a smaller index than jsonb_ops.
            Create = $"CREATE TABLE IF NOT EXISTS {name} (id text COLLATE \"C\" PRIMARY KEY, data jsonb NOT NULL); " +
                $"CREATE INDEX IF NOT EXISTS {Migrations.Quote(Name + "_data")} ON {name} USING gin (data jsonb_path_ops)";
            Drop = $"DROP TABLE IF EXISTS {name}";
            Get = $"SELECT data::text FROM {name} WHERE id = $1";
            // Locked in id order, so two units changing the same documents take them in the same order.
            SelectForUpdate = $"SELECT id, data::text FROM {name} WHERE id = ANY($1) ORDER BY id FOR UPDATE";
            Insert = $"INSERT INTO {name} (id, data) SELECT * FROM unnest($1::text[], $2::jsonb[]) ON CONFLICT (id) DO NOTHING RETURNING id";
            Update = $"UPDATE {name} AS t SET data = v.data FROM unnest($1::text[], $2::jsonb[]) AS v(id, data) WHERE t.id = v.id";
            Delete = $"DELETE FROM {name} WHERE id = ANY($1)";
        }

        /// <summary>The read-model table.</summary>
        public string Table { get; }

        /// <summary>The generation.</summary>
        public int Generation { get; }

        /// <summary>The table's name within the schema, unquoted.</summary>
        public string Name { get; }

        public string Create { get; }

        public string Drop { get; }

        public string Get { get; }

        /// <summary>$1 the ids: their documents, locked.</summary>
        public string SelectForUpdate { get; }

        /// <summary>$1 the ids, $2 the documents: the rows inserted, returning the ids of those no other unit inserted first.</summary>
        public string Insert { get; }

        /// <summary>$1 the ids, $2 the new documents.</summary>
        public string Update { get; }

        /// <summary>$1 the ids.</summary>
        public string Delete { get; }

        /// <summary>The table's name up to its generation number.</summary>
        public static string Prefix(string table) => "rm_" + table + "_g";

        /// <summary>
        /// A page of documents: $1 the id to start after, $2 the limit, $3 the conditions as one JSON object. Each shape is a
        /// text of its own, so a plan never keeps a condition that is off (the primary key serves the range, the GIN index
        /// the containment).
        /// </summary>
        public string Query(bool after, bool where) =>
            $"SELECT id, data::text FROM {_qualified} WHERE " + (after ? "id > $1" : "$1::text IS NULL") + (where ? " AND data @> $3" : "") +
            " ORDER BY id LIMIT $2";
    }
}
