using Herald.EventSourcing;
using Herald.Persistence;
using Herald.Sqlite.Internal;

namespace Herald.Sqlite.EventSourcing;

internal sealed partial class SqliteEventStore
{
    /// <inheritdoc />
    public ValueTask<long?> GetCheckpointAsync(string subscriptionId, CancellationToken cancellationToken = default)
    {
        if (!CheckpointValidation.CanBeStored(subscriptionId))
        {
            return ValueTask.FromResult<long?>(null);
        }

        return ReadAsync(reader =>
        {
            var command = reader.Command("SELECT position FROM herald_checkpoints WHERE subscription_id = $p0", 1);
            command.Parameters[0].Value = subscriptionId;
            return command.ExecuteScalar() is long position ? position : (long?)null;
        }, cancellationToken);
    }

    /// <inheritdoc />
    public async ValueTask SetCheckpointAsync(string subscriptionId, long position, CancellationToken cancellationToken = default)
    {
        CheckpointValidation.Validate(subscriptionId, position);
        await WriteAsync(session =>
        {
            session.SetCheckpoint(subscriptionId, position);
            return true;
        }, cancellationToken).ConfigureAwait(false);
    }

    /// <inheritdoc />
    public ValueTask<Snapshot?> LoadSnapshotAsync(string stream, CancellationToken cancellationToken = default)
    {
        StreamName.Validate(stream);
        return ReadAsync(reader =>
        {
            var command = reader.Command(
                "SELECT version, state_type, schema_version, state, created_at, created_offset FROM herald_snapshots WHERE stream = $p0", 1);
            command.Parameters[0].Value = stream;
            using var row = command.ExecuteReader();
            return row.Read()
                ? new Snapshot(stream, row.GetInt64(0), row.GetString(1), row.GetInt32(2), row.GetFieldValue<byte[]>(3), EventRows.ToTime(row.GetInt64(4), row.GetInt32(5)))
                : null;
        }, cancellationToken);
    }

    /// <inheritdoc />
    public ValueTask SetCheckpointAsync(string subscriptionId, long position, IUnitOfWork unitOfWork, CancellationToken cancellationToken = default)
    {
        CheckpointValidation.Validate(subscriptionId, position);
        cancellationToken.ThrowIfCancellationRequested();
        Own(unitOfWork).Enlist(session => session.AdvanceCheckpoint(subscriptionId, position));
        return ValueTask.CompletedTask;
    }

    /// <inheritdoc />
    public ValueTask SaveSnapshotAsync(Snapshot snapshot, IUnitOfWork unitOfWork, CancellationToken cancellationToken = default)
    {
        SnapshotValidation.Validate(snapshot);
        cancellationToken.ThrowIfCancellationRequested();
        var copy = snapshot with { State = snapshot.State.ToArray() };
        Own(unitOfWork).Enlist(session => session.SaveSnapshot(copy));
        return ValueTask.CompletedTask;
    }

    /// <inheritdoc />
    public async ValueTask SaveSnapshotAsync(Snapshot snapshot, CancellationToken cancellationToken = default)
    {
        SnapshotValidation.Validate(snapshot);
        await WriteAsync(session =>
        {
            session.SaveSnapshot(snapshot);
            return true;
        }, cancellationToken).ConfigureAwait(false);
    }
}
