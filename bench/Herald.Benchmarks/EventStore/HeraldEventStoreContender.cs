using Herald.Sqlite.EventSourcing;
using Herald.EventSourcing;
using Herald.Messages;
using Herald.Postgres;
using Herald.Postgres.EventSourcing;
using Herald.Sqlite;
using Npgsql;

namespace Herald.Benchmarks.EventStore;

/// <summary>A Herald event store (SQLite file or PostgreSQL schema) behind the IEventStore port, fed envelopes as the real API builds them.</summary>
internal sealed class HeraldEventStoreContender : IEventStoreContender
{
    // Streams per writer for single-event appends: many streams, none shared between writers.
    private const int StreamsPerWriter = 64;

    private readonly Func<CancellationToken, Task<IEventStore>> _open;
    private readonly Func<ValueTask> _cleanUp;
    private readonly EnvelopeFactory _envelopes;
    private readonly MessageTypeRegistry _registry = new();
    private readonly SystemTextJsonMessageSerializer _serializer = new();
    private readonly string _runId = Guid.NewGuid().ToString("N")[..8];
    private static readonly SqliteStoreOptions SqliteDefaults = new();
    private static readonly PostgresStoreOptions PostgresDefaults = new();

    private IEventStore? _store;
    private int _sequence;

    private HeraldEventStoreContender(string name, string setup, Func<CancellationToken, Task<IEventStore>> open, Func<ValueTask> cleanUp)
    {
        Name = name;
        Setup = setup;
        _open = open;
        _cleanUp = cleanUp;
        _registry.Register<AccountCredited>("account-credited");
        _envelopes = new EnvelopeFactory(_registry, _serializer, TimeProvider.System);
    }

    public string Name { get; }

    public string Setup { get; }

    private IEventStore Store => _store ?? throw new InvalidOperationException("Not started.");

    public static HeraldEventStoreContender Sqlite()
    {
        var path = Path.Combine(Path.GetTempPath(), $"herald-bench-{Guid.NewGuid():N}.db");
        return new HeraldEventStoreContender(
            "Herald SQLite",
            $"`SqliteEventStoreFactory.OpenAsync(path)` on a temp file, defaults (WAL, synchronous {SqliteDefaults.Synchronous}, group commit of up to {SqliteDefaults.MaxWritesPerTransaction} writes)",
            async ct => await SqliteEventStoreFactory.OpenAsync(path, cancellationToken: ct),
            () => DeleteSqliteFiles(path));
    }

    public static HeraldEventStoreContender Postgres(string connectionString)
    {
        var schema = $"herald_bench_{Guid.NewGuid():N}"[..24];
        return new HeraldEventStoreContender(
            "Herald PostgreSQL",
            $"`PostgresEventStoreFactory.CreateAsync(cs, new PostgresStoreOptions {{ Schema = fresh }})`, defaults otherwise ({PostgresDefaults.AppendWriters} append writers, up to {PostgresDefaults.MaxAppendsPerCommit} appends per commit)",
            async ct => await PostgresEventStoreFactory.CreateAsync(connectionString, new PostgresStoreOptions { Schema = schema }, ct),
            () => DropSchemaAsync(connectionString, schema));
    }

    public async Task StartAsync(CancellationToken cancellationToken) => _store = await _open(cancellationToken);

    public async Task AppendOneAsync(int writer, int index, CancellationToken cancellationToken) =>
        await Store.AppendAsync($"account-{_runId}w{writer}s{index % StreamsPerWriter}", ExpectedVersion.Any, [NextEnvelope()], cancellationToken);

    public async Task AppendBatchAsync(int size, CancellationToken cancellationToken)
    {
        var events = new Envelope[size];
        for (var i = 0; i < events.Length; i++)
        {
            events[i] = NextEnvelope();
        }

        await Store.AppendAsync($"ledger-{Guid.CreateVersion7():N}", ExpectedVersion.NoStream, events, cancellationToken);
    }

    public async Task CreateReadStreamAsync(int events, CancellationToken cancellationToken)
    {
        for (var done = 0; done < events; done += 100)
        {
            var batch = new Envelope[Math.Min(100, events - done)];
            for (var i = 0; i < batch.Length; i++)
            {
                batch[i] = NextEnvelope();
            }

            await Store.AppendAsync(ReadStream, ExpectedVersion.Any, batch, cancellationToken);
        }
    }

    public async Task<int> ReadStreamAsync(CancellationToken cancellationToken)
    {
        var count = 0;
        await foreach (var e in Store.ReadStreamAsync(ReadStream, cancellationToken: cancellationToken))
        {
            count += Decode(e) is not null ? 1 : 0;
        }

        return count;
    }

    public async Task<int> ReadAllAsync(int maxCount, CancellationToken cancellationToken)
    {
        var count = 0;
        await foreach (var e in Store.ReadAllAsync(0, null, maxCount, cancellationToken))
        {
            count += Decode(e) is not null ? 1 : 0;
        }

        return count;
    }

    public async ValueTask DisposeAsync()
    {
        if (_store is IAsyncDisposable disposable)
        {
            await disposable.DisposeAsync();
        }

        await _cleanUp();
    }

    private string ReadStream => $"reader-{_runId}";

    // As the aggregate repository and the dispatcher do: the registered type by name, the body through the serializer. Marten
    // deserializes every event it reads, so a read that only looked at the bytes would not compare like with like.
    private AccountCredited? Decode(RecordedEvent recorded) =>
        _serializer.Deserialize(recorded.Envelope.Body, _registry.GetType(recorded.Envelope.MessageType)) as AccountCredited;

    private Envelope NextEnvelope() => _envelopes.Create(AccountCredited.Next(Interlocked.Increment(ref _sequence)));

    /// <summary>Deletes a SQLite database file with its write-ahead log and shared-memory files.</summary>
    internal static ValueTask DeleteSqliteFiles(string path)
    {
        foreach (var file in new[] { path, path + "-wal", path + "-shm" })
        {
            File.Delete(file);
        }

        return ValueTask.CompletedTask;
    }

    internal static async ValueTask DropSchemaAsync(string connectionString, string schema)
    {
        NpgsqlConnection.ClearAllPools();
        await using var connection = new NpgsqlConnection(connectionString);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand($"DROP SCHEMA IF EXISTS \"{schema}\" CASCADE", connection);
        await command.ExecuteNonQueryAsync();
    }
}
