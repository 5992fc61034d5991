using Herald.EventSourcing;
using Herald.Messages;
using Herald.Postgres.Internal;
using Npgsql;
using NpgsqlTypes;

namespace Herald.Postgres.EventSourcing;

internal sealed partial class PostgresEventStore
{
    /// <inheritdoc />
    public async ValueTask<AppendResult> AppendAsync(string stream, ExpectedVersion expectedVersion, IReadOnlyList<Envelope> events, CancellationToken cancellationToken = default)
    {
        ValidateAppend(stream, expectedVersion, events);
        var pending = events.Count == 0 ? null : new PendingAppend(stream, expectedVersion, events, cancellationToken);
        cancellationToken.ThrowIfCancellationRequested();
        var runtime = await GetRuntimeAsync(cancellationToken).ConfigureAwait(false);
        if (pending is null)
        {
            return await CheckEmptyAppendAsync(runtime, stream, expectedVersion, cancellationToken).ConfigureAwait(false);
        }

        return await runtime.Coordinator.AppendAsync(pending, cancellationToken).ConfigureAwait(false);
    }

    /// <inheritdoc />
    public async ValueTask<long> GetStreamVersionAsync(string stream, CancellationToken cancellationToken = default)
    {
        StreamName.Validate(stream);
        var runtime = await GetRuntimeAsync(cancellationToken).ConfigureAwait(false);
        var (version, _) = await ReadStreamStateAsync(runtime, stream, cancellationToken).ConfigureAwait(false);
        return version;
    }

    /// <inheritdoc />
    public async ValueTask DeleteStreamAsync(string stream, ExpectedVersion expectedVersion, CancellationToken cancellationToken = default)
    {
        StreamName.Validate(stream);
        AppendValidation.ValidateExpectedVersion(expectedVersion);
        var runtime = await GetRuntimeAsync(cancellationToken).ConfigureAwait(false);
        await using var connection = await OpenAsync(cancellationToken).ConfigureAwait(false);
        await using var command = new NpgsqlCommand(runtime.Sql.Delete, connection);
        command.Parameters.Add(new NpgsqlParameter<string> { TypedValue = stream, NpgsqlDbType = NpgsqlDbType.Text });
        command.Parameters.Add(new NpgsqlParameter<long> { TypedValue = expectedVersion.Value, NpgsqlDbType = NpgsqlDbType.Bigint });
        await using var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
        await reader.ReadAsync(cancellationToken).ConfigureAwait(false);
        if (reader.GetInt32(0) != 0)
        {
            throw new ConcurrencyException(stream, expectedVersion, reader.GetInt64(1));
        }
    }

    // Checked on the caller's thread, before anything is written or the append joins a group (U+0000 in the events' text
    // columns is refused as their PendingAppend is built).
    private void ValidateAppend(string stream, ExpectedVersion expectedVersion, IReadOnlyList<Envelope> events)
    {
        AppendValidation.Validate(stream, expectedVersion, events, _options.MaxEventBytes);
        if (events.Count > AppendCoordinator.MaxEventsPerAppend)
        {
            throw new ArgumentException($"The append to '{stream}' holds {events.Count} events; one append may hold at most {AppendCoordinator.MaxEventsPerAppend}.", nameof(events));
        }
    }

    // One append in a transaction the caller holds; its events are numbered from firstOrdinal within that transaction.
    private async Task<AppendResult> AppendInTransactionAsync(
        Runtime runtime, NpgsqlConnection connection, NpgsqlTransaction transaction, PendingAppend pending, int firstOrdinal, bool notify, CancellationToken cancellationToken)
    {
        await using var command = new NpgsqlCommand(runtime.Sql.Append, connection, transaction);
        AppendCall.AddParameters(command.Parameters, runtime.Sql, [pending], firstOrdinal, _time.GetUtcNow().UtcDateTime);
        AppendOutcome outcome;
        await using (var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false))
        {
            await reader.ReadAsync(cancellationToken).ConfigureAwait(false);
            outcome = AppendOutcome.ReadRow(reader, 1)[0];
        }

        if (!outcome.Succeeded)
        {
            throw outcome.ToException(pending.Stream, pending.Expected);
        }

        if (notify)
        {
            // Inside the transaction: the notification is delivered at its commit, and not at all if it rolls back.
            await using var signal = new NpgsqlCommand(runtime.Sql.Notify, connection, transaction);
            await signal.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
        }

        return outcome.Result;
    }

    private async ValueTask<AppendResult> CheckEmptyAppendAsync(Runtime runtime, string stream, ExpectedVersion expectedVersion, CancellationToken cancellationToken)
    {
        var (version, lastPosition) = await ReadStreamStateAsync(runtime, stream, cancellationToken).ConfigureAwait(false);
        if (!expectedVersion.IsSatisfiedBy(version))
        {
            throw new ConcurrencyException(stream, expectedVersion, version);
        }

        return new AppendResult(version, version == 0 ? 0 : lastPosition);
    }

    private async ValueTask<(long Version, long LastPosition)> ReadStreamStateAsync(Runtime runtime, string stream, CancellationToken cancellationToken)
    {
        await using var connection = await OpenAsync(cancellationToken).ConfigureAwait(false);
        await using var command = new NpgsqlCommand(runtime.Sql.StreamState, connection);
        command.Parameters.Add(new NpgsqlParameter<string> { TypedValue = stream, NpgsqlDbType = NpgsqlDbType.Text });
        await using var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
        return await reader.ReadAsync(cancellationToken).ConfigureAwait(false) ? (reader.GetInt64(0), reader.GetInt64(1)) : (0, 0);
    }
}
