using Herald.EventSourcing;
using Herald.Persistence;
using Herald.Postgres.Internal;
using Npgsql;
using NpgsqlTypes;

namespace Herald.Postgres.EventSourcing;

internal sealed partial class PostgresEventStore
{
    /// <inheritdoc />
    public async ValueTask<long?> GetCheckpointAsync(string subscriptionId, CancellationToken cancellationToken = default)
    {
        if (!CheckpointValidation.CanBeStored(subscriptionId))
        {
            // No checkpoint can have it (storing one refuses it).
            return null;
        }

        var runtime = await GetRuntimeAsync(cancellationToken).ConfigureAwait(false);
        await using var connection = await OpenAsync(cancellationToken).ConfigureAwait(false);
        await using var command = new NpgsqlCommand(runtime.Sql.GetCheckpoint, connection);
        command.Parameters.Add(new NpgsqlParameter<string> { TypedValue = subscriptionId, NpgsqlDbType = NpgsqlDbType.Text });
        return await command.ExecuteScalarAsync(cancellationToken).ConfigureAwait(false) is long position ? position : null;
    }

    /// <inheritdoc />
    public async ValueTask SetCheckpointAsync(string subscriptionId, long position, CancellationToken cancellationToken = default)
    {
        CheckpointValidation.Validate(subscriptionId, position);
        var runtime = await GetRuntimeAsync(cancellationToken).ConfigureAwait(false);
        await using var connection = await OpenAsync(cancellationToken).ConfigureAwait(false);
        await using var command = SetCheckpointCommand(runtime.Sql.SetCheckpoint, subscriptionId, position, connection, transaction: null);
        await command.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
    }

    /// <inheritdoc />
    public async ValueTask SetCheckpointAsync(string subscriptionId, long position, IUnitOfWork unitOfWork, CancellationToken cancellationToken = default)
    {
        CheckpointValidation.Validate(subscriptionId, position);
        var own = Own(unitOfWork);
        var runtime = await GetRuntimeAsync(cancellationToken).ConfigureAwait(false);
        await own.ExecuteAsync(
            async (connection, transaction, token) =>
            {
                // Only forward: when another runner stored this position or a later one, this unit of work applied an
                // event twice, so it must fail and write nothing.
                await using var command = SetCheckpointCommand(runtime.Sql.AdvanceCheckpoint, subscriptionId, position, connection, transaction);
                var changed = await command.ExecuteNonQueryAsync(token).ConfigureAwait(false);
                return changed == 0 ? throw new CheckpointConflictException(subscriptionId, position) : changed;
            },
            cancellationToken).ConfigureAwait(false);
    }

    /// <inheritdoc />
    public async ValueTask<Snapshot?> LoadSnapshotAsync(string stream, CancellationToken cancellationToken = default)
    {
        StreamName.Validate(stream);
        var runtime = await GetRuntimeAsync(cancellationToken).ConfigureAwait(false);
        await using var connection = await OpenAsync(cancellationToken).ConfigureAwait(false);
        await using var command = new NpgsqlCommand(runtime.Sql.LoadSnapshot, connection);
        command.Parameters.Add(new NpgsqlParameter<string> { TypedValue = stream, NpgsqlDbType = NpgsqlDbType.Text });
        await using var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
        if (!await reader.ReadAsync(cancellationToken).ConfigureAwait(false))
        {
            return null;
        }

        return new Snapshot(
            stream,
            reader.GetInt64(0),
            reader.GetString(1),
            reader.GetInt32(2),
            reader.GetFieldValue<byte[]>(3),
            reader.GetFieldValue<DateTimeOffset>(4));
    }

    /// <inheritdoc />
    public async ValueTask SaveSnapshotAsync(Snapshot snapshot, CancellationToken cancellationToken = default)
    {
        ValidateSnapshot(snapshot);
        var runtime = await GetRuntimeAsync(cancellationToken).ConfigureAwait(false);
        await using var connection = await OpenAsync(cancellationToken).ConfigureAwait(false);
        await using var command = SaveSnapshotCommand(runtime, snapshot, connection, transaction: null);
        await command.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
    }

    /// <inheritdoc />
    public async ValueTask SaveSnapshotAsync(Snapshot snapshot, IUnitOfWork unitOfWork, CancellationToken cancellationToken = default)
    {
        ValidateSnapshot(snapshot);
        var own = Own(unitOfWork);
        var runtime = await GetRuntimeAsync(cancellationToken).ConfigureAwait(false);
        await own.ExecuteAsync(
            async (connection, transaction, token) =>
            {
                await using var command = SaveSnapshotCommand(runtime, snapshot, connection, transaction);
                return await command.ExecuteNonQueryAsync(token).ConfigureAwait(false);
            },
            cancellationToken).ConfigureAwait(false);
    }

    private static void ValidateSnapshot(Snapshot snapshot)
    {
        SnapshotValidation.Validate(snapshot);

        // It names the state's type, against which a loaded snapshot is checked: kept exactly or refused, never altered.
        NulText.ThrowIfHeld(snapshot.StateType, "state type", nameof(snapshot), snapshot, static s => $"the snapshot of '{s.Stream}'");
    }

    private NpgsqlCommand SetCheckpointCommand(string sql, string subscriptionId, long position, NpgsqlConnection connection, NpgsqlTransaction? transaction)
    {
        var command = new NpgsqlCommand(sql, connection, transaction);
        command.Parameters.Add(new NpgsqlParameter<string> { TypedValue = subscriptionId, NpgsqlDbType = NpgsqlDbType.Text });
        command.Parameters.Add(new NpgsqlParameter<long> { TypedValue = position, NpgsqlDbType = NpgsqlDbType.Bigint });
        command.Parameters.Add(new NpgsqlParameter<DateTime> { TypedValue = _time.GetUtcNow().UtcDateTime, NpgsqlDbType = NpgsqlDbType.TimestampTz });
        return command;
    }

    private static NpgsqlCommand SaveSnapshotCommand(Runtime runtime, Snapshot snapshot, NpgsqlConnection connection, NpgsqlTransaction? transaction)
    {
        var command = new NpgsqlCommand(runtime.Sql.SaveSnapshot, connection, transaction);
        command.Parameters.Add(new NpgsqlParameter<string> { TypedValue = snapshot.Stream, NpgsqlDbType = NpgsqlDbType.Text });
        command.Parameters.Add(new NpgsqlParameter<long> { TypedValue = snapshot.Version, NpgsqlDbType = NpgsqlDbType.Bigint });
        command.Parameters.Add(new NpgsqlParameter<string> { TypedValue = snapshot.StateType, NpgsqlDbType = NpgsqlDbType.Text });
        command.Parameters.Add(new NpgsqlParameter<int> { TypedValue = snapshot.SchemaVersion, NpgsqlDbType = NpgsqlDbType.Integer });
        command.Parameters.Add(new NpgsqlParameter<byte[]> { TypedValue = EnvelopeColumns.BodyArray(snapshot.State), NpgsqlDbType = NpgsqlDbType.Bytea });
        command.Parameters.Add(new NpgsqlParameter<DateTime> { TypedValue = snapshot.CreatedAt.UtcDateTime, NpgsqlDbType = NpgsqlDbType.TimestampTz });
        return command;
    }
}
