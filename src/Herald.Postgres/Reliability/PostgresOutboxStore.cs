using Herald.Postgres.EventSourcing;
using Herald.Postgres.Internal;
using Herald.Postgres.Schema;
using Herald.Reliability;
using Herald.Reliability.Outbox;
using Npgsql;
using NpgsqlTypes;

namespace Herald.Postgres.Reliability;

/// <summary>
/// Outgoing messages in the <c>outbox</c> table of a <see cref="PostgresEventStore"/>'s schema. Rows added in a
/// <see cref="PostgresUnitOfWork"/> are written in its transaction; pending rows come back in the order they were added
/// (an identity sequence).
/// </summary>
/// <remarks>
/// Several nodes may run a relay on one schema: <see cref="FetchPendingAsync"/> only returns rows on the node that holds
/// the schema's outbox leadership, a session advisory lock taken on a connection the store keeps while it leads. The
/// others get an empty list and try again on their next poll, taking over when the leader's connection ends (dispose, crash,
/// network loss). So one relay sends at a time and per-key order holds, as the port's contract asks.
/// </remarks>
public sealed class PostgresOutboxStore : IOutboxStore, IAsyncDisposable
{
    private const string Columns =
        "id, destination_kind, destination, created_at, outbox_partition_key, deliver_at, sent_at, " + EnvelopeColumns.StoredNames;

    private readonly PostgresEventStore _store;
    private readonly long _leaderKey;
    private readonly SemaphoreSlim _leaderGate = new(1, 1);
    private readonly string _insert;
    private readonly string _fetch;
    private readonly string _get;
    private readonly string _count;
    private readonly string _markSent;
    private readonly string _deleteSent;
    private NpgsqlConnection? _leader;
    private bool _disposed;

    /// <summary>Creates the outbox in the schema of <paramref name="store"/> (which creates and migrates it).</summary>
    public PostgresOutboxStore(PostgresEventStore store)
    {
        ArgumentNullException.ThrowIfNull(store);
        _store = store;
        _leaderKey = SchemaMigrator.LockKey("outbox-relay:" + store.Schema);
        var table = Migrations.Quote(store.Schema) + ".outbox";
        var values = string.Join(", ", Enumerable.Range(1, 7 + EnvelopeColumns.StoredCount).Select(i => "$" + i));
        _insert = $"INSERT INTO {table} ({Columns}) VALUES ({values})";
        _fetch = $"SELECT {Columns} FROM {table} WHERE sent_at IS NULL ORDER BY seq LIMIT $1";
        _get = $"SELECT {Columns} FROM {table} WHERE id = $1";
        _count = $"SELECT count(*) FROM {table} WHERE sent_at IS NULL";
        _markSent = $"UPDATE {table} SET sent_at = $2 WHERE id = ANY ($1) AND sent_at IS NULL";
        _deleteSent = $"DELETE FROM {table} WHERE seq IN (SELECT seq FROM {table} WHERE sent_at < $1 ORDER BY sent_at LIMIT $2)";
    }

    /// <summary>True while this instance holds the schema's outbox leadership (so its fetches return rows).</summary>
    public bool IsLeader => Volatile.Read(ref _leader) is not null;

    /// <inheritdoc />
    public async ValueTask AddAsync(IReadOnlyList<OutboxMessage> messages, IUnitOfWork? unitOfWork = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(messages);
        var rows = messages.ToArray();
        foreach (var row in rows)
        {
            ArgumentNullException.ThrowIfNull(row, nameof(messages));
        }

        if (rows.Length == 0)
        {
            return;
        }

        if (unitOfWork is null)
        {
            await InsertAloneAsync(rows, cancellationToken).ConfigureAwait(false);
        }
        else if (_store.OwnUnitOfWork(unitOfWork) is { } own)
        {
            await own.ExecuteAsync((connection, transaction, token) => InsertAsync(connection, transaction, rows, token), cancellationToken).ConfigureAwait(false);
        }
        else
        {
            // A unit of work without a transaction here: the rows follow its commit.
            unitOfWork.OnCommitted(token => new ValueTask(InsertAloneAsync(rows, token)));
        }
    }

    /// <inheritdoc />
    public async ValueTask<IReadOnlyList<OutboxMessage>> FetchPendingAsync(int maxCount, CancellationToken cancellationToken = default)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(maxCount, 1);
        await _leaderGate.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            var leader = _leader ?? await TryLeadAsync(cancellationToken).ConfigureAwait(false);
            if (leader is null)
            {
                return [];
            }

            try
            {
                // On the leader's own connection: a node whose lock connection broke stops fetching at once.
                await using var command = new NpgsqlCommand(_fetch, leader);
                command.Parameters.Add(EnvelopeColumns.Int(maxCount));
                await using var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
                var messages = new List<OutboxMessage>();
                while (await reader.ReadAsync(cancellationToken).ConfigureAwait(false))
                {
                    messages.Add(Read(reader));
                }

                return messages;
            }
            catch (Exception ex) when (ex is NpgsqlException or OperationCanceledException or InvalidOperationException)
            {
                await ResignAsync().ConfigureAwait(false);
                throw;
            }
        }
        finally
        {
            _leaderGate.Release();
        }
    }

    /// <inheritdoc />
    public async ValueTask MarkSentAsync(IReadOnlyCollection<Guid> ids, DateTimeOffset sentAt, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(ids);
        if (ids.Count == 0)
        {
            return;
        }

        await using var connection = await _store.OpenStartedAsync(cancellationToken).ConfigureAwait(false);
        await using var command = new NpgsqlCommand(_markSent, connection);
        command.Parameters.Add(new NpgsqlParameter<Guid[]> { TypedValue = [.. ids], NpgsqlDbType = NpgsqlDbType.Array | NpgsqlDbType.Uuid });
        command.Parameters.Add(EnvelopeColumns.Time(sentAt));
        await command.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
    }

    /// <inheritdoc />
    public async ValueTask<int> DeleteSentAsync(DateTimeOffset sentBefore, int maxCount, CancellationToken cancellationToken = default)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(maxCount, 1);
        await using var connection = await _store.OpenStartedAsync(cancellationToken).ConfigureAwait(false);
        await using var command = new NpgsqlCommand(_deleteSent, connection);
        command.Parameters.Add(EnvelopeColumns.Time(sentBefore));
        command.Parameters.Add(EnvelopeColumns.Int(maxCount));
        return await command.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
    }

    /// <inheritdoc />
    public async ValueTask<long> CountPendingAsync(CancellationToken cancellationToken = default)
    {
        await using var connection = await _store.OpenStartedAsync(cancellationToken).ConfigureAwait(false);
        await using var command = new NpgsqlCommand(_count, connection);
        return (long)(await command.ExecuteScalarAsync(cancellationToken).ConfigureAwait(false))!;
    }

    /// <inheritdoc />
    public async ValueTask<OutboxMessage?> GetAsync(Guid id, CancellationToken cancellationToken = default)
    {
        await using var connection = await _store.OpenStartedAsync(cancellationToken).ConfigureAwait(false);
        await using var command = new NpgsqlCommand(_get, connection);
        command.Parameters.Add(EnvelopeColumns.Id(id));
        await using var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
        return await reader.ReadAsync(cancellationToken).ConfigureAwait(false) ? Read(reader) : null;
    }

    /// <summary>Gives up the outbox leadership (another node's relay takes over) and closes its connection.</summary>
    public async ValueTask DisposeAsync()
    {
        await _leaderGate.WaitAsync(CancellationToken.None).ConfigureAwait(false);
        try
        {
            _disposed = true;
            await ResignAsync().ConfigureAwait(false);
        }
        finally
        {
            _leaderGate.Release();
        }
    }

    private async Task<NpgsqlConnection?> TryLeadAsync(CancellationToken cancellationToken)
    {
        var connection = await _store.OpenStartedAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            await using var command = new NpgsqlCommand("SELECT pg_try_advisory_lock($1)", connection);
            command.Parameters.Add(new NpgsqlParameter<long> { TypedValue = _leaderKey, NpgsqlDbType = NpgsqlDbType.Bigint });
            if ((bool)(await command.ExecuteScalarAsync(cancellationToken).ConfigureAwait(false))!)
            {
                Volatile.Write(ref _leader, connection);
                return connection;
            }
        }
        catch
        {
            await connection.DisposeAsync().ConfigureAwait(false);
            throw;
        }

        await connection.DisposeAsync().ConfigureAwait(false);
        return null;
    }

    private async ValueTask ResignAsync()
    {
        var leader = _leader;
        Volatile.Write(ref _leader, null);
        if (leader is null)
        {
            return;
        }

        try
        {
            // Unlock before the connection goes back to the pool, where it would keep the session lock.
            if (leader.State == System.Data.ConnectionState.Open)
            {
                await using var command = new NpgsqlCommand("SELECT pg_advisory_unlock($1)", leader);
                command.Parameters.Add(new NpgsqlParameter<long> { TypedValue = _leaderKey, NpgsqlDbType = NpgsqlDbType.Bigint });
                await command.ExecuteNonQueryAsync(CancellationToken.None).ConfigureAwait(false);
            }
        }
        catch (Exception ex) when (ex is NpgsqlException or InvalidOperationException or ObjectDisposedException)
        {
            // A broken connection holds no lock any more: the server released it with the session.
        }
        finally
        {
            await leader.DisposeAsync().ConfigureAwait(false);
        }
    }

    private async Task InsertAloneAsync(OutboxMessage[] rows, CancellationToken cancellationToken)
    {
        await using var connection = await _store.OpenStartedAsync(cancellationToken).ConfigureAwait(false);
        await using var transaction = await connection.BeginTransactionAsync(cancellationToken).ConfigureAwait(false);
        await InsertAsync(connection, transaction, rows, cancellationToken).ConfigureAwait(false);
        await transaction.CommitAsync(cancellationToken).ConfigureAwait(false);
    }

    private async Task<bool> InsertAsync(NpgsqlConnection connection, NpgsqlTransaction transaction, OutboxMessage[] rows, CancellationToken cancellationToken)
    {
        // One round trip; the statements run in order, so the sequence keeps the list's order.
        await using var batch = new NpgsqlBatch(connection, transaction);
        foreach (var message in rows)
        {
            var command = new NpgsqlBatchCommand(_insert);
            var p = command.Parameters;
            p.Add(EnvelopeColumns.Id(message.Id));
            p.Add(EnvelopeColumns.Text(message.DestinationKind.ToString()));
            p.Add(EnvelopeColumns.Text(message.Destination));
            p.Add(EnvelopeColumns.Time(message.CreatedAt));
            p.Add(EnvelopeColumns.Text(message.PartitionKey));
            p.Add(EnvelopeColumns.Time(message.DeliverAt));
            p.Add(EnvelopeColumns.Time(message.SentAt));
            EnvelopeColumns.AddStored(p, message.Envelope);
            batch.BatchCommands.Add(command);
        }

        await batch.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
        return true;
    }

    private static OutboxMessage Read(NpgsqlDataReader reader) => new()
    {
        Id = reader.GetGuid(0),
        DestinationKind = Enum.Parse<OutboxDestinationKind>(reader.GetString(1)),
        Destination = reader.GetString(2),
        CreatedAt = reader.GetFieldValue<DateTimeOffset>(3),
        PartitionKey = EnvelopeColumns.NullableText(reader, 4),
        DeliverAt = EnvelopeColumns.NullableTime(reader, 5),
        SentAt = EnvelopeColumns.NullableTime(reader, 6),
        Envelope = EnvelopeColumns.ReadStored(reader, 7),
    };
}
