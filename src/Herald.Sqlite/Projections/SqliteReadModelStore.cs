using System.Collections.Concurrent;
using System.Globalization;
using Herald.Internal;
using Herald.Persistence;
using Herald.Projections;
using Herald.Sqlite.EventSourcing;
using Herald.Sqlite.Internal;

namespace Herald.Sqlite.Projections;

/// <summary>
/// Read models in the SQLite file of the event store: one table per read-model table and generation
/// (<c>herald_rm_{table}_g{generation}</c>: the id and the JSON), created on first write, and the active generation of each
/// read model in <c>herald_read_models</c>. Changes run at the commit of their unit of work on the single writer, reading
/// the document first, so they commit with the projection's checkpoint and several changes of one document in one unit of
/// work compose; a change of a generation older than the active one fails its unit of work. Reads use the pooled readers,
/// each in one snapshot.
/// </summary>
internal sealed class SqliteReadModelStore(SqliteEventStore store) : IReadModelStore
{
    // The active generation and whether its table exists, in one statement; $p1 is the table's name without the generation.
    private const string ActiveSql =
        "SELECT g, EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = $p1 || g) " +
        "FROM (SELECT COALESCE((SELECT active_generation FROM herald_read_models WHERE table_name = $p0), 1) AS g)";

    private const string ExistsSql = "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = $p0)";

    private const string ActiveInWriterSql = "SELECT active_generation FROM herald_read_models WHERE table_name = ?1";

    private const string ActivateSql =
        "INSERT INTO herald_read_models (table_name, active_generation, activated_at) VALUES (?1, ?2, ?3) " +
        "ON CONFLICT (table_name) DO UPDATE SET active_generation = excluded.active_generation, activated_at = excluded.activated_at";

    private readonly SqliteEventStore _store = store ?? throw new ArgumentNullException(nameof(store));
    private readonly ConcurrentDictionary<(string Table, int Generation), TableSql> _sql = new();

    public ValueTask<string?> GetAsync(string table, string id, CancellationToken cancellationToken = default)
    {
        ReadModelNames.Validate(table);
        ArgumentNullException.ThrowIfNull(id);
        if (StorableReadModelWrites.NoDocumentHolds(id))
        {
            // No document can have it (writes refuse it); asking would find the document whose id has U+FFFD in its place.
            return ValueTask.FromResult<string?>(null);
        }

        return _store.ReadAsync(reader => reader.InSnapshot(() =>
        {
            return ActiveTable(reader, table) is { } sql ? ReadDocument(reader, sql, id) : null;
        }), cancellationToken);
    }

    public ValueTask<string?> GetAsync(string table, int generation, string id, CancellationToken cancellationToken = default)
    {
        ReadModelNames.Validate(table);
        ReadModelNames.ValidateGeneration(generation);
        ArgumentNullException.ThrowIfNull(id);
        if (StorableReadModelWrites.NoDocumentHolds(id))
        {
            return ValueTask.FromResult<string?>(null);
        }

        var sql = Sql(table, generation);
        return _store.ReadAsync(reader => reader.InSnapshot(() =>
        {
            // Not made yet (nothing written to it), or dropped: no document.
            var exists = reader.Command(ExistsSql, 1);
            exists.Parameters[0].Value = TableSql.Prefix(table) + generation.ToString(CultureInfo.InvariantCulture);
            return Convert.ToBoolean(exists.ExecuteScalar(), CultureInfo.InvariantCulture) ? ReadDocument(reader, sql, id) : null;
        }), cancellationToken);
    }

    public ValueTask<IReadOnlyList<ReadModelDocument>> QueryAsync(string table, ReadModelQuery query, CancellationToken cancellationToken = default)
    {
        ReadModelNames.Validate(table);
        ReadModelNames.Validate(query);
        if (query.Where.Values.Any(StorableReadModelWrites.NoDocumentHolds))
        {
            // As on PostgreSQL: no document holds such a value (SQLite would match U+FFFD in its place).
            return ValueTask.FromResult<IReadOnlyList<ReadModelDocument>>([]);
        }

        var where = query.Where.ToArray();
        return _store.ReadAsync<IReadOnlyList<ReadModelDocument>>(reader => reader.InSnapshot<IReadOnlyList<ReadModelDocument>>(() =>
        {
            if (ActiveTable(reader, table) is not { } sql)
            {
                return [];
            }

            var command = reader.Command(sql.Query(query.AfterId is not null, where.Length), 2 + (2 * where.Length));
            command.Parameters[0].Value = (object?)query.AfterId ?? DBNull.Value;
            command.Parameters[1].Value = query.Limit;
            for (var i = 0; i < where.Length; i++)
            {
                // The property names were validated (letters, digits, '_'), so "$.name" is a plain JSON path.
                command.Parameters[2 + (2 * i)].Value = "$." + where[i].Key;
                command.Parameters[3 + (2 * i)].Value = where[i].Value;
            }

            return command.ReadAll(row => new ReadModelDocument(row.GetString(0), row.GetString(1)));
        }), cancellationToken);
    }

    public ValueTask UpdateAsync(string table, int generation, string id, Func<string?, string?> change, IUnitOfWork unitOfWork, CancellationToken cancellationToken = default)
    {
        change = ReadModelNames.ValidateUpdate(table, generation, id, change);
        cancellationToken.ThrowIfCancellationRequested();
        var sql = Sql(table, generation);
        _store.Own(unitOfWork).Enlist(session => Update(session, table, generation, sql, id, change));
        return ValueTask.CompletedTask;
    }

    public ValueTask<int> GetActiveGenerationAsync(string table, CancellationToken cancellationToken = default)
    {
        ReadModelNames.Validate(table);
        return _store.ReadAsync(reader =>
        {
            var command = reader.Command(ActiveSql, 2);
            command.Parameters[0].Value = table;
            command.Parameters[1].Value = TableSql.Prefix(table);
            return Convert.ToInt32(command.ExecuteScalar(), CultureInfo.InvariantCulture);
        }, cancellationToken);
    }

    public ValueTask ResetGenerationAsync(string table, int generation, CancellationToken cancellationToken = default) =>
        DropStorageAsync(table, generation, "reset", recreate: true, cancellationToken);

    public ValueTask ActivateGenerationAsync(string table, int generation, IUnitOfWork unitOfWork, CancellationToken cancellationToken = default)
    {
        ReadModelNames.Validate(table);
        ReadModelNames.ValidateGeneration(generation);
        cancellationToken.ThrowIfCancellationRequested();
        _store.Own(unitOfWork).Enlist(session =>
        {
            var activate = session.Statement(ActivateSql);
            activate.Bind(1, table);
            activate.Bind(2, generation);
            activate.Bind(3, _store.TimeProvider.GetUtcNow().UtcTicks);
            activate.Execute();
        });
        return ValueTask.CompletedTask;
    }

    public ValueTask DropGenerationAsync(string table, int generation, CancellationToken cancellationToken = default) =>
        DropStorageAsync(table, generation, "dropped", recreate: false, cancellationToken);

    // Drops the table of a generation that is not the active one, and with recreate makes it again, empty: one write, so
    // the check and the change see the same file.
    private async ValueTask DropStorageAsync(string table, int generation, string verb, bool recreate, CancellationToken cancellationToken)
    {
        ReadModelNames.Validate(table);
        ReadModelNames.ValidateGeneration(generation);
        var sql = Sql(table, generation);
        await _store.WriteAsync(session =>
        {
            StorableReadModelWrites.ThrowIfActive(table, generation, ActiveInWriter(session, table), verb);

            session.Statement(sql.Drop).Execute();
            if (recreate)
            {
                session.Statement(sql.Create).Execute();
            }

            return true;
        }, cancellationToken).ConfigureAwait(false);
    }

    // The generation that serves reads, as the writer sees it.
    private static int ActiveInWriter(WriteSession session, string table)
    {
        var active = session.Statement(ActiveInWriterSql);
        active.Bind(1, table);
        return (int)(active.ExecuteInt64() ?? 1);
    }

    // Runs at the commit, inside the writer's savepoint for the unit of work: a change that throws undoes the whole unit.
    private static void Update(WriteSession session, string table, int generation, TableSql sql, string id, Func<string?, string?> change)
    {
        // A runner a rebuild left behind: refused before its dropped table is made again, in the write that would change it.
        var active = ActiveInWriter(session, table);
        if (generation < active)
        {
            throw new ReadModelGenerationRetiredException(table, generation, active);
        }

        // A no-op once the table exists (the prepared statement then checks the schema only). Not cached in process: a
        // creation undone with its savepoint, or a table another process dropped, would leave such a cache wrong.
        session.Statement(sql.Create).Execute();
        var select = session.Statement(sql.Select);
        select.Bind(1, id);
        string? current = null;
        if (select.Step())
        {
            current = select.Text(0);
            select.Reset();
        }

        var next = change(current);
        if (next is null)
        {
            if (current is not null)
            {
                var delete = session.Statement(sql.Delete);
                delete.Bind(1, id);
                delete.Execute();
            }

            return;
        }

        var upsert = session.Statement(sql.Upsert);
        upsert.Bind(1, id);
        upsert.Bind(2, next);
        upsert.Execute();
    }

    private static string? ReadDocument(ReaderPool.Reader reader, TableSql sql, string id)
    {
        var command = reader.Command(sql.Get, 1);
        command.Parameters[0].Value = id;
        return command.ExecuteScalar() as string;
    }

    // The statements of the active generation's table, or null when that table does not exist (yet, or any more).
    private TableSql? ActiveTable(ReaderPool.Reader reader, string table)
    {
        var command = reader.Command(ActiveSql, 2);
        command.Parameters[0].Value = table;
        command.Parameters[1].Value = TableSql.Prefix(table);
        using var row = command.ExecuteReader();
        row.Read();
        return row.GetBoolean(1) ? Sql(table, row.GetInt32(0)) : null;
    }

    private TableSql Sql(string table, int generation) => _sql.GetOrAdd((table, generation), static key => new TableSql(key.Table, key.Generation));

    /// <summary>The statements on one generation's table; the name is built from a validated table name and a number.</summary>
    private sealed class TableSql(string name)
    {
        public TableSql(string table, int generation)
            : this("\"" + Prefix(table) + generation.ToString(CultureInfo.InvariantCulture) + "\"")
        {
        }

        public string Name { get; } = name;

        // json_valid refuses what is not JSON when it is written, as PostgreSQL's jsonb does, so queries never meet it.
        public string Create { get; } = $"CREATE TABLE IF NOT EXISTS {name} (id TEXT NOT NULL PRIMARY KEY, data TEXT NOT NULL CHECK (json_valid(data))) STRICT";

        public string Drop { get; } = $"DROP TABLE IF EXISTS {name}";

        public string Get { get; } = $"SELECT data FROM {name} WHERE id = $p0";

        public string Select { get; } = $"SELECT data FROM {name} WHERE id = ?1";

        public string Upsert { get; } = $"INSERT INTO {name} (id, data) VALUES (?1, ?2) ON CONFLICT (id) DO UPDATE SET data = excluded.data";

        public string Delete { get; } = $"DELETE FROM {name} WHERE id = ?1";

        /// <summary>The table's name up to its generation number.</summary>
        public static string Prefix(string table) => "herald_rm_" + table + "_g";

        /// <summary>
        /// A page of documents: $p0 the id to start after, $p1 the limit, then per condition its JSON path and value. The two
        /// shapes keep the id range a range the primary key serves, and a condition matches strings only.
        /// </summary>
        public string Query(bool after, int conditions)
        {
            var text = new System.Text.StringBuilder("SELECT id, data FROM ").Append(Name).Append(after ? " WHERE id > $p0" : " WHERE $p0 IS NULL");
            for (var i = 0; i < conditions; i++)
            {
                var path = "$p" + (2 + (2 * i)).ToString(CultureInfo.InvariantCulture);
                var value = "$p" + (3 + (2 * i)).ToString(CultureInfo.InvariantCulture);
                text.Append(" AND json_type(data, ").Append(path).Append(") = 'text' AND json_extract(data, ").Append(path).Append(") = ").Append(value);
            }

            return text.Append(" ORDER BY id LIMIT $p1").ToString();
        }
    }
}
