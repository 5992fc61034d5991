using JasperFx;
using JasperFx.Events;
using Herald.Benchmarks.Harness;
using Marten;

namespace Herald.Benchmarks.EventStore;

/// <summary>Marten's event store in its fastest append mode, on its own schema of the same PostgreSQL.</summary>
internal sealed class MartenContender(string connectionString) : IEventStoreContender
{
    private const int StreamsPerWriter = 64;

    private readonly string _schema = $"marten_bench_{Guid.NewGuid():N}"[..24];
    private readonly Guid _readStream = Guid.CreateVersion7();
    private Guid[][] _streams = [];
    private DocumentStore? _store;
    private int _sequence;

    public string Name => "Marten";

    public string Setup => $"Marten {PackageVersion.Of(typeof(DocumentStore))} `DocumentStore` on a fresh schema, `Events.AppendMode = EventAppendMode.Quick`, Guid stream ids; one `LightweightSession` per append " +
        "(`Events.Append` + `SaveChangesAsync`); reads: `FetchStreamAsync` and `QueryAllRawEvents().OrderBy(Sequence).Take(n).ToAsyncEnumerable()`";

    private DocumentStore Store => _store ?? throw new InvalidOperationException("Not started.");

    public async Task StartAsync(CancellationToken cancellationToken)
    {
        _streams = [.. Enumerable.Range(0, 64).Select(_ => Enumerable.Range(0, StreamsPerWriter).Select(_ => Guid.CreateVersion7()).ToArray())];
        _store = DocumentStore.For(options =>
        {
            options.Connection(connectionString);
            options.DatabaseSchemaName = _schema;
            options.Events.DatabaseSchemaName = _schema;
            options.Events.AppendMode = EventAppendMode.Quick;
            options.Events.AddEventType<AccountCredited>();
            options.AutoCreateSchemaObjects = AutoCreate.All;
        });
        await _store.Storage.ApplyAllConfiguredChangesToDatabaseAsync();
    }

    public async Task AppendOneAsync(int writer, int index, CancellationToken cancellationToken)
    {
        await using var session = Store.LightweightSession();
        session.Events.Append(_streams[writer][index % StreamsPerWriter], AccountCredited.Next(Interlocked.Increment(ref _sequence)));
        await session.SaveChangesAsync(cancellationToken);
    }

    public async Task AppendBatchAsync(int size, CancellationToken cancellationToken)
    {
        var events = new object[size];
        for (var i = 0; i < events.Length; i++)
        {
            events[i] = AccountCredited.Next(Interlocked.Increment(ref _sequence));
        }

        await using var session = Store.LightweightSession();
        session.Events.StartStream(Guid.CreateVersion7(), events);
        await session.SaveChangesAsync(cancellationToken);
    }

    public async Task CreateReadStreamAsync(int events, CancellationToken cancellationToken)
    {
        for (var done = 0; done < events; done += 100)
        {
            var batch = Enumerable.Range(0, Math.Min(100, events - done)).Select(_ => (object)AccountCredited.Next(Interlocked.Increment(ref _sequence))).ToArray();
            await using var session = Store.LightweightSession();
            session.Events.Append(_readStream, batch);
            await session.SaveChangesAsync(cancellationToken);
        }
    }

    public async Task<int> ReadStreamAsync(CancellationToken cancellationToken)
    {
        await using var session = Store.QuerySession();
        var events = await session.Events.FetchStreamAsync(_readStream, token: cancellationToken);
        return events.Count(e => e.Data is AccountCredited);
    }

    public async Task<int> ReadAllAsync(int maxCount, CancellationToken cancellationToken)
    {
        await using var session = Store.QuerySession();
        var count = 0;
        await foreach (var e in session.Events.QueryAllRawEvents().OrderBy(e => e.Sequence).Take(maxCount).ToAsyncEnumerable(cancellationToken))
        {
            count += e.Data is AccountCredited ? 1 : 0;
        }

        return count;
    }

    public async ValueTask DisposeAsync()
    {
        _store?.Dispose();
        await HeraldEventStoreContender.DropSchemaAsync(connectionString, _schema);
    }
}
