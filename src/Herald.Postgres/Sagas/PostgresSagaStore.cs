using Herald.Persistence;
using Herald.Postgres.EventSourcing;
using Herald.Postgres.Internal;
using Herald.Internal;
using Herald.Sagas;
using Npgsql;
using NpgsqlTypes;

namespace Herald.Postgres.Sagas;

/// <summary>
/// Saga instances in the event store's schema. A save in a unit of work runs in its transaction, so it commits with the
/// appends, outbox rows and inbox marks of that unit; a version conflict there dooms the unit, which then fails at its
/// commit with nothing written.
/// </summary>
/// <param name="store">The event store whose schema the instances live in.</param>
/// <param name="timeProvider">The clock that stamps saves; the event store's when null.</param>
internal sealed class PostgresSagaStore(PostgresEventStore store, TimeProvider? timeProvider = null) : ISagaStore
{
    private const string Columns = "saga_type, id, status, state, current_step, completed_steps, data, error, created_at, updated_at, version, timeouts";

    private readonly PostgresEventStore _store = store ?? throw new ArgumentNullException(nameof(store));
    private readonly TimeProvider _time = timeProvider ?? store.TimeProvider;
    private readonly TableSql _sql = new(store.Table("sagas"));

    public async ValueTask<SagaInstance?> LoadAsync(string sagaType, string id, CancellationToken cancellationToken = default)
    {
        if (!SagaValidation.CanBeStored(sagaType, id) || NulText.Holds(sagaType) || NulText.Holds(id))
        {
            // No instance can have it (saves refuse it).
            return null;
        }

        return await _store.QueryFirstAloneAsync(_sql.Load, [EnvelopeColumns.Text(sagaType), EnvelopeColumns.Text(id)], Read, cancellationToken).ConfigureAwait(false);
    }

    public async ValueTask<long> SaveAsync(SagaInstance instance, CancellationToken cancellationToken = default)
    {
        Validate(instance);
        await using var connection = await _store.OpenStartedAsync(cancellationToken).ConfigureAwait(false);
        var version = await TrySaveAsync(instance, connection, transaction: null, cancellationToken).ConfigureAwait(false);
        return version > 0 ? version : throw await ConflictAsync(instance, connection, transaction: null, cancellationToken).ConfigureAwait(false);
    }

    public async ValueTask SaveAsync(SagaInstance instance, IUnitOfWork unitOfWork, CancellationToken cancellationToken = default)
    {
        Validate(instance);
        var own = _store.Own(unitOfWork);
        await own.ExecuteAsync(
            async (connection, transaction, token) =>
            {
                if (await TrySaveAsync(instance, connection, transaction, token).ConfigureAwait(false) == 0)
                {
                    // The transaction is still sound (nothing failed in it); the unit of work must not commit, though.
                    own.Doom(await ConflictAsync(instance, connection, transaction, token).ConfigureAwait(false));
                }

                return true;
            },
            cancellationToken).ConfigureAwait(false);
    }

    public async ValueTask<IReadOnlyList<SagaInstance>> ListAsync(SagaQuery query, CancellationToken cancellationToken = default)
    {
        SagaValidation.Validate(query);
        if (NulText.Holds(query.SagaType))
        {
            return [];
        }

        return await _store.QueryAloneAsync(_sql.List, ListParameters(query), Read, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>A page of instances: $1 type, $2 statuses, $3/$4 the key to start after, $5 the limit (a null turns a filter off).</summary>
    internal string ListSql => _sql.List;

    /// <summary>The parameters of <see cref="ListSql"/> for a query.</summary>
    internal static NpgsqlParameter[] ListParameters(SagaQuery query) =>
    [
        EnvelopeColumns.Text(query.SagaType),
        new NpgsqlParameter
        {
            Value = query.Statuses is { Count: > 0 } statuses ? statuses.Select(s => s.ToString()).ToArray() : DBNull.Value,
            NpgsqlDbType = NpgsqlDbType.Array | NpgsqlDbType.Text,
        },
        EnvelopeColumns.Text(After(query).SagaType),
        EnvelopeColumns.Text(After(query).Id),
        EnvelopeColumns.Int(query.Limit),
    ];

    // The key to start after, up to its first U+0000 (no stored key holds one, and it sorts first): a name cut there starts
    // after every instance of the shorter name, as a null id does ((t, id) > (name, NULL) holds only for t > name); an id cut
    // there starts after the shorter id.
    private static (string? SagaType, string? Id) After(SagaQuery query) => query.After switch
    {
        null => (null, null),
        var (type, _) when NulText.Holds(type) => (NulText.BeforeNul(type), null),
        var (type, id) => (type, NulText.BeforeNul(id)),
    };

    private static void Validate(SagaInstance instance)
    {
        SagaValidation.Validate(instance);
        NulText.ThrowIfHeld(instance.SagaType, "saga name", nameof(instance));
        NulText.ThrowIfHeld(instance.Id, "saga instance id", nameof(instance));

        // Step names and timeouts drive the saga on, so they are kept exactly or refused; the error (below) is only read.
        NulText.ThrowIfHeld(instance.State, "saga state", nameof(instance), instance, Of);
        foreach (var step in instance.CompletedSteps)
        {
            NulText.ThrowIfHeld(step, "completed step", nameof(instance), instance, Of);
        }

        foreach (var timeout in instance.Timeouts)
        {
            NulText.ThrowIfHeld(timeout.Name, "timeout name", nameof(instance), instance, Of);
            NulText.ThrowIfHeld(timeout.MessageType, "timeout's message type", nameof(instance), instance, Of);
        }

        static string Of(SagaInstance instance) => $"saga '{instance.SagaType}' instance '{instance.Id}'";
    }

    public async ValueTask<bool> DeleteAsync(string sagaType, string id, long version, CancellationToken cancellationToken = default)
    {
        if (!SagaValidation.CanBeStored(sagaType, id) || NulText.Holds(sagaType) || NulText.Holds(id))
        {
            return false;
        }

        NpgsqlParameter[] parameters = [EnvelopeColumns.Text(sagaType), EnvelopeColumns.Text(id), new NpgsqlParameter<long> { TypedValue = version }];
        return await _store.ExecuteAloneAsync(_sql.Delete, parameters, cancellationToken).ConfigureAwait(false) > 0;
    }

    // The new version, or 0 when the stored version was not the expected one (nothing written).
    private async Task<long> TrySaveAsync(SagaInstance instance, NpgsqlConnection connection, NpgsqlTransaction? transaction, CancellationToken cancellationToken)
    {
        await using var command = new NpgsqlCommand(instance.Version == 0 ? _sql.Insert : _sql.Update, connection, transaction);
        var p = command.Parameters;
        p.Add(EnvelopeColumns.Text(instance.SagaType));
        p.Add(EnvelopeColumns.Text(instance.Id));
        p.Add(EnvelopeColumns.Text(instance.Status.ToString()));
        p.Add(EnvelopeColumns.Text(instance.State));
        p.Add(EnvelopeColumns.Int(instance.CurrentStep));
        p.Add(new NpgsqlParameter<string[]> { TypedValue = [.. instance.CompletedSteps], NpgsqlDbType = NpgsqlDbType.Array | NpgsqlDbType.Text });
        p.Add(new NpgsqlParameter<ReadOnlyMemory<byte>> { TypedValue = instance.Data, NpgsqlDbType = NpgsqlDbType.Bytea });
        // An exception's message that echoes its input can hold U+0000: refusing it would leave the saga unable to record
        // its failure, so, as a dead letter's error, it is stored readable.
        p.Add(EnvelopeColumns.Text(NulText.Readable(instance.Error)));
        p.Add(EnvelopeColumns.Time(_time.GetUtcNow()));
        p.Add(new NpgsqlParameter<string?> { TypedValue = SagaTimeoutColumn.Write(instance.Timeouts), NpgsqlDbType = NpgsqlDbType.Jsonb });
        if (instance.Version != 0)
        {
            p.Add(new NpgsqlParameter<long> { TypedValue = instance.Version });
        }

        return await command.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false) == 1 ? instance.Version + 1 : 0;
    }

    private async Task<SagaConcurrencyException> ConflictAsync(SagaInstance instance, NpgsqlConnection connection, NpgsqlTransaction? transaction, CancellationToken cancellationToken)
    {
        await using var command = new NpgsqlCommand(_sql.Version, connection, transaction);
        command.Parameters.Add(EnvelopeColumns.Text(instance.SagaType));
        command.Parameters.Add(EnvelopeColumns.Text(instance.Id));
        var actual = await command.ExecuteScalarAsync(cancellationToken).ConfigureAwait(false) as long?;
        return new SagaConcurrencyException(instance.SagaType, instance.Id, instance.Version, actual);
    }

    private static SagaInstance Read(NpgsqlDataReader row) => new()
    {
        SagaType = row.GetString(0),
        Id = row.GetString(1),
        Status = Enum.Parse<SagaStatus>(row.GetString(2)),
        State = row.IsDBNull(3) ? null : row.GetString(3),
        CurrentStep = row.GetInt32(4),
        CompletedSteps = row.GetFieldValue<string[]>(5),
        Data = row.GetFieldValue<byte[]>(6),
        Error = row.IsDBNull(7) ? null : row.GetString(7),
        CreatedAt = row.GetFieldValue<DateTimeOffset>(8),
        UpdatedAt = row.GetFieldValue<DateTimeOffset>(9),
        Version = row.GetInt64(10),
        Timeouts = SagaTimeoutColumn.Read(row.IsDBNull(11) ? null : row.GetString(11)),
    };

    /// <summary>The statements on the <c>sagas</c> table of the store's schema.</summary>
    private sealed class TableSql(string table)
    {
        public string Insert { get; } = $"INSERT INTO {table} ({Columns}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9, 1, $10) ON CONFLICT (saga_type, id) DO NOTHING";

        public string Update { get; } = $"UPDATE {table} SET status = $3, state = $4, current_step = $5, completed_steps = $6, data = $7, error = $8, updated_at = $9, timeouts = $10, " +
            "version = version + 1 WHERE saga_type = $1 AND id = $2 AND version = $11";

        public string Version { get; } = $"SELECT version FROM {table} WHERE saga_type = $1 AND id = $2";

        public string Load { get; } = $"SELECT {Columns} FROM {table} WHERE saga_type = $1 AND id = $2";

        // A null parameter turns its filter off.
        public string List { get; } = $"SELECT {Columns} FROM {table} WHERE ($1::text IS NULL OR saga_type = $1) AND ($2::text[] IS NULL OR status = ANY($2))" +
            " AND ($3::text IS NULL OR (saga_type, id) > ($3, $4::text)) ORDER BY saga_type, id LIMIT $5";

        public string Delete { get; } = $"DELETE FROM {table} WHERE saga_type = $1 AND id = $2 AND version = $3";
    }
}
