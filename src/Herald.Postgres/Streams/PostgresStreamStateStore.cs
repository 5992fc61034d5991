using System.Runtime.CompilerServices;
using Herald.Persistence;
using Herald.Postgres.EventSourcing;
using Herald.Postgres.Internal;
using Herald.Streams;
using Npgsql;
using NpgsqlTypes;

namespace Herald.Postgres.Streams;

/// <summary>
/// Stream processors' state in the event store's schema (<c>stream_state</c>, created on first use). Changes are written
/// in the unit of work's transaction, with the processor's checkpoint, so a restart sees the state of exactly the
/// committed position. One statement per commit upserts (and one deletes) every changed key through arrays.
/// </summary>
internal sealed class PostgresStreamStateStore(PostgresEventStore store) : IStreamStateStore
{
    private readonly PostgresEventStore _store = store ?? throw new ArgumentNullException(nameof(store));
    private readonly TableSql _sql = new(store.Table("stream_state"));
    private volatile bool _created;

    public async IAsyncEnumerable<StateEntry> ReadAllAsync(string processor, [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(processor);
        if (NulText.Holds(processor))
        {
            // No state can be stored under it (writes refuse it).
            yield break;
        }

        await EnsureCreatedAsync(cancellationToken).ConfigureAwait(false);
        await using var connection = await _store.OpenStartedAsync(cancellationToken).ConfigureAwait(false);
        await using var command = new NpgsqlCommand(_sql.Read, connection);
        command.Parameters.Add(new NpgsqlParameter { Value = processor, NpgsqlDbType = NpgsqlDbType.Text });
        await using var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
        while (await reader.ReadAsync(cancellationToken).ConfigureAwait(false))
        {
            yield return new StateEntry(reader.GetString(0), reader.GetString(1), reader.GetString(2));
        }
    }

    public async ValueTask WriteAsync(string processor, IReadOnlyList<StateChange> changes, IUnitOfWork unitOfWork, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(processor);
        ArgumentNullException.ThrowIfNull(changes);
        NulText.ThrowIfHeld(processor, "stream processor name", nameof(processor));
        foreach (var change in changes)
        {
            // Kept exactly or refused: a store, key or value read back altered would be another one.
            NulText.ThrowIfHeld(change.Store, "state store name", nameof(changes), processor, Of);
            NulText.ThrowIfHeld(change.Key, "state key", nameof(changes), processor, Of);
            NulText.ThrowIfHeld(change.Value, "state value", nameof(changes), processor, Of);
        }

        static string Of(string processor) => $"stream processor '{processor}'";

        await EnsureCreatedAsync(cancellationToken).ConfigureAwait(false);
        var upserts = changes.Where(c => c.Value is not null).ToArray();
        var deletes = changes.Where(c => c.Value is null).ToArray();
        await _store.Own(unitOfWork).ExecuteAsync<bool>(
            async (connection, transaction, token) =>
            {
                if (upserts.Length > 0)
                {
                    await using var upsert = new NpgsqlCommand(_sql.Upsert, connection, transaction);
                    upsert.Parameters.Add(new NpgsqlParameter { Value = processor, NpgsqlDbType = NpgsqlDbType.Text });
                    upsert.Parameters.Add(TextArray(upserts.Select(c => c.Store)));
                    upsert.Parameters.Add(TextArray(upserts.Select(c => c.Key)));
                    upsert.Parameters.Add(TextArray(upserts.Select(c => c.Value!)));
                    await upsert.ExecuteNonQueryAsync(token).ConfigureAwait(false);
                }

                if (deletes.Length > 0)
                {
                    await using var delete = new NpgsqlCommand(_sql.Delete, connection, transaction);
                    delete.Parameters.Add(new NpgsqlParameter { Value = processor, NpgsqlDbType = NpgsqlDbType.Text });
                    delete.Parameters.Add(TextArray(deletes.Select(c => c.Store)));
                    delete.Parameters.Add(TextArray(deletes.Select(c => c.Key)));
                    await delete.ExecuteNonQueryAsync(token).ConfigureAwait(false);
                }

                return true;
            },
            cancellationToken).ConfigureAwait(false);
    }

    private static NpgsqlParameter TextArray(IEnumerable<string> values) =>
        new() { Value = values.ToArray(), NpgsqlDbType = NpgsqlDbType.Array | NpgsqlDbType.Text };

    private async ValueTask EnsureCreatedAsync(CancellationToken cancellationToken)
    {
        if (_created)
        {
            return;
        }

        // Its own short statement before the unit of work writes: an empty table left behind by a rollback is harmless.
        await using var connection = await _store.OpenStartedAsync(cancellationToken).ConfigureAwait(false);
        await using var command = new NpgsqlCommand(_sql.Create, connection);
        await command.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
        _created = true;
    }

    /// <summary>The statements on the <c>stream_state</c> table of the store's schema.</summary>
    private sealed class TableSql(string table)
    {
        public string Create { get; } = $"CREATE TABLE IF NOT EXISTS {table} (processor text NOT NULL, store text NOT NULL, key text NOT NULL, value text NOT NULL, PRIMARY KEY (processor, store, key))";

        public string Upsert { get; } = $"INSERT INTO {table} (processor, store, key, value) SELECT $1, s, k, v FROM unnest($2::text[], $3::text[], $4::text[]) AS c(s, k, v) " +
            "ON CONFLICT (processor, store, key) DO UPDATE SET value = EXCLUDED.value";

        public string Delete { get; } = $"DELETE FROM {table} t USING unnest($2::text[], $3::text[]) AS c(s, k) WHERE t.processor = $1 AND t.store = c.s AND t.key = c.k";

        public string Read { get; } = $"SELECT store, key, value FROM {table} WHERE processor = $1";
    }
}
