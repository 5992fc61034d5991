using System.Text.Json;
using Herald.Persistence;
using Herald.Internal;
using Herald.Sagas;
using Herald.Sqlite.EventSourcing;
using Herald.Sqlite.Internal;

namespace Herald.Sqlite.Sagas;

/// <summary>
/// Saga instances in the SQLite file of the event store, written by its single writer, so a save in a unit of work
/// commits with the appends, outbox rows and inbox marks of that unit.
/// </summary>
/// <param name="store">The event store whose file the instances live in.</param>
/// <param name="timeProvider">The clock that stamps saves; the event store's when null.</param>
internal sealed class SqliteSagaStore(SqliteEventStore store, TimeProvider? timeProvider = null) : ISagaStore
{
    private const string Columns = "saga_type, id, status, state, current_step, completed_steps, data, error, created_at, updated_at, version, timeouts";

    private const string InsertSql =
        "INSERT INTO herald_sagas (" + Columns + ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9, 1, ?10) ON CONFLICT (saga_type, id) DO NOTHING";

    private const string UpdateSql =
        "UPDATE herald_sagas SET status = ?3, state = ?4, current_step = ?5, completed_steps = ?6, data = ?7, error = ?8, updated_at = ?9, timeouts = ?10, " +
        "version = version + 1 WHERE saga_type = ?1 AND id = ?2 AND version = ?11";

    private const string VersionSql = "SELECT version FROM herald_sagas WHERE saga_type = ?1 AND id = ?2";
    private const string LoadSql = "SELECT " + Columns + " FROM herald_sagas WHERE saga_type = $p0 AND id = $p1";
    private const string DeleteSql = "DELETE FROM herald_sagas WHERE saga_type = ?1 AND id = ?2 AND version = ?3";

    // A null parameter turns its filter off; the statuses are five slots, unused ones null (which match nothing).
    private const string ListSql =
        "SELECT " + Columns + " FROM herald_sagas WHERE ($p0 IS NULL OR saga_type = $p0)" +
        " AND ($p1 IS NULL OR status IN ($p2, $p3, $p4, $p5, $p6))" +
        " AND ($p7 IS NULL OR saga_type > $p7 OR (saga_type = $p7 AND id > $p8))" +
        " ORDER BY saga_type, id LIMIT $p9";

    private readonly SqliteEventStore _store = store ?? throw new ArgumentNullException(nameof(store));
    private readonly TimeProvider _time = timeProvider ?? store.TimeProvider;

    public ValueTask<SagaInstance?> LoadAsync(string sagaType, string id, CancellationToken cancellationToken = default)
    {
        if (!SagaValidation.CanBeStored(sagaType, id))
        {
            // No instance can have it (saves refuse it); bound, it would be read as U+FFFD and find another instance.
            return ValueTask.FromResult<SagaInstance?>(null);
        }

        return _store.ReadAsync(reader =>
        {
            var command = reader.Command(LoadSql, 2);
            command.Parameters[0].Value = sagaType;
            command.Parameters[1].Value = id;
            return command.ReadFirst(Read);
        }, cancellationToken);
    }

    public async ValueTask<long> SaveAsync(SagaInstance instance, CancellationToken cancellationToken = default)
    {
        SagaValidation.Validate(instance);
        var now = _time.GetUtcNow();
        return await _store.WriteAsync(session => Save(session, instance, now), cancellationToken).ConfigureAwait(false);
    }

    public ValueTask SaveAsync(SagaInstance instance, IUnitOfWork unitOfWork, CancellationToken cancellationToken = default)
    {
        SagaValidation.Validate(instance);
        cancellationToken.ThrowIfCancellationRequested();
        var copy = instance with { Data = instance.Data.ToArray(), CompletedSteps = [.. instance.CompletedSteps], Timeouts = [.. instance.Timeouts] };
        _store.Own(unitOfWork).Enlist(session => Save(session, copy, _time.GetUtcNow()));
        return ValueTask.CompletedTask;
    }

    public ValueTask<IReadOnlyList<SagaInstance>> ListAsync(SagaQuery query, CancellationToken cancellationToken = default)
    {
        SagaValidation.Validate(query);
        return _store.ReadAsync<IReadOnlyList<SagaInstance>>(reader =>
        {
            var command = reader.Command(ListSql, 10);
            command.Parameters[0].Value = (object?)query.SagaType ?? DBNull.Value;
            var statuses = query.Statuses is { Count: > 0 } filter ? filter.Distinct().Select(s => s.ToString()).ToArray() : [];
            command.Parameters[1].Value = statuses.Length > 0 ? 1 : DBNull.Value;
            for (var i = 0; i < 5; i++)
            {
                command.Parameters[2 + i].Value = i < statuses.Length ? statuses[i] : DBNull.Value;
            }

            command.Parameters[7].Value = (object?)query.After?.SagaType ?? DBNull.Value;
            command.Parameters[8].Value = (object?)query.After?.Id ?? DBNull.Value;
            command.Parameters[9].Value = query.Limit;
            return command.ReadAll(Read);
        }, cancellationToken);
    }

    public async ValueTask<bool> DeleteAsync(string sagaType, string id, long version, CancellationToken cancellationToken = default)
    {
        if (!SagaValidation.CanBeStored(sagaType, id))
        {
            return false;
        }

        return await _store.WriteAsync(session =>
        {
            var delete = session.Statement(DeleteSql);
            delete.Bind(1, sagaType);
            delete.Bind(2, id);
            delete.Bind(3, version);
            delete.Execute();
            return delete.Changes > 0;
        }, cancellationToken).ConfigureAwait(false);
    }

    // Runs inside the writer's savepoint: a conflict throws, and the savepoint undoes whatever the unit wrote before it.
    private static long Save(WriteSession session, SagaInstance instance, DateTimeOffset now)
    {
        var write = session.Statement(instance.Version == 0 ? InsertSql : UpdateSql);
        write.Bind(1, instance.SagaType);
        write.Bind(2, instance.Id);
        write.Bind(3, instance.Status.ToString());
        write.Bind(4, instance.State);
        write.Bind(5, instance.CurrentStep);
        write.Bind(6, JsonSerializer.Serialize(instance.CompletedSteps, SagaJson.Default.IReadOnlyListString));
        write.Bind(7, instance.Data.Span);
        write.Bind(8, instance.Error);
        write.Bind(9, StoredTime.Of(now).UtcTicks);
        write.Bind(10, SagaTimeoutColumn.Write(instance.Timeouts));
        if (instance.Version != 0)
        {
            write.Bind(11, instance.Version);
        }

        write.Execute();
        if (write.Changes == 1)
        {
            return instance.Version + 1;
        }

        var current = session.Statement(VersionSql);
        current.Bind(1, instance.SagaType);
        current.Bind(2, instance.Id);
        throw new SagaConcurrencyException(instance.SagaType, instance.Id, instance.Version, current.ExecuteInt64());
    }

    private static SagaInstance Read(Microsoft.Data.Sqlite.SqliteDataReader row) => new()
    {
        SagaType = row.GetString(0),
        Id = row.GetString(1),
        Status = Enum.Parse<SagaStatus>(row.GetString(2)),
        State = row.IsDBNull(3) ? null : row.GetString(3),
        CurrentStep = row.GetInt32(4),
        CompletedSteps = JsonSerializer.Deserialize(row.GetString(5), SagaJson.Default.IReadOnlyListString) ?? [],
        Data = row.GetFieldValue<byte[]>(6),
        Error = row.IsDBNull(7) ? null : row.GetString(7),
        CreatedAt = new DateTimeOffset(row.GetInt64(8), TimeSpan.Zero),
        UpdatedAt = new DateTimeOffset(row.GetInt64(9), TimeSpan.Zero),
        Version = row.GetInt64(10),
        Timeouts = SagaTimeoutColumn.Read(row.IsDBNull(11) ? null : row.GetString(11)),
    };
}
