using System.Runtime.CompilerServices;
using Herald.Persistence;
using Herald.Sqlite.EventSourcing;
using Herald.Sqlite.Internal;
using Herald.Streams;

namespace Herald.Sqlite.Streams;

/// <summary>
/// Stream processors' state in the SQLite file of the event store (<c>herald_stream_state</c>, created on first use).
/// Changes run at the commit of their unit of work on the single writer, in the same transaction as the processor's
/// checkpoint, so a restart sees the state of exactly the committed position.
/// </summary>
internal sealed class SqliteStreamStateStore(SqliteEventStore store) : IStreamStateStore
{
    private const string CreateSql =
        "CREATE TABLE IF NOT EXISTS herald_stream_state (processor TEXT NOT NULL, store TEXT NOT NULL, key TEXT NOT NULL, " +
        "value TEXT NOT NULL, PRIMARY KEY (processor, store, key)) WITHOUT ROWID";

    private const string UpsertSql =
        "INSERT INTO herald_stream_state (processor, store, key, value) VALUES (?1, ?2, ?3, ?4) " +
        "ON CONFLICT (processor, store, key) DO UPDATE SET value = excluded.value";

    private const string DeleteSql = "DELETE FROM herald_stream_state WHERE processor = ?1 AND store = ?2 AND key = ?3";

    private const string ReadSql = "SELECT store, key, value FROM herald_stream_state WHERE processor = $p0";

    private Task? _created;

    public async IAsyncEnumerable<StateEntry> ReadAllAsync(string processor, [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(processor);
        await EnsureTableAsync(cancellationToken).ConfigureAwait(false);
        var rows = await store.ReadAsync(reader =>
        {
            var command = reader.Command(ReadSql, 1);
            command.Parameters[0].Value = processor;
            return command.ReadAll(row => new StateEntry(row.GetString(0), row.GetString(1), row.GetString(2)));
        }, cancellationToken).ConfigureAwait(false);
        foreach (var row in rows)
        {
            yield return row;
        }
    }

    public async ValueTask WriteAsync(string processor, IReadOnlyList<StateChange> changes, IUnitOfWork unitOfWork, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(processor);
        ArgumentNullException.ThrowIfNull(changes);
        await EnsureTableAsync(cancellationToken).ConfigureAwait(false);
        var copy = changes.ToArray();
        store.Own(unitOfWork).Enlist(session =>
        {
            var upsert = session.Statement(UpsertSql);
            var delete = session.Statement(DeleteSql);
            foreach (var change in copy)
            {
                var statement = change.Value is null ? delete : upsert;
                statement.Bind(1, processor);
                statement.Bind(2, change.Store);
                statement.Bind(3, change.Key);
                if (change.Value is not null)
                {
                    statement.Bind(4, change.Value);
                }

                statement.Execute();
            }
        });
    }

    private Task EnsureTableAsync(CancellationToken cancellationToken)
    {
        // Racing first calls may both create it; IF NOT EXISTS makes that harmless. A failed attempt is retried next time.
        var created = _created;
        if (created is { IsCompletedSuccessfully: true })
        {
            return created;
        }

        return _created = store.WriteAsync(session =>
        {
            session.Statement(CreateSql).Execute();
            return true;
        }, cancellationToken);
    }
}
