using Herald.Benchmarks.EventStore;
using JasperFx;
using JasperFx.Events;
using Marten;

namespace Herald.Benchmarks.Scale;

/// <summary>Marten's event store (Quick append mode) on its own schema of the same PostgreSQL, grown like Herald's.</summary>
internal sealed class MartenScaleStore(string connectionString) : ScaleEventStore
{
    private readonly string _schema = $"marten_scale_{Guid.NewGuid():N}"[..24];
    private readonly Guid[][] _streams = [.. Enumerable.Range(0, 16).Select(_ => Enumerable.Range(0, 64).Select(_ => Guid.CreateVersion7()).ToArray())];
    private DocumentStore? _store;
    private int _sequence;

    public override string Name => "Marten";

    private DocumentStore Store => _store ?? throw new InvalidOperationException("Not started.");

    public override async Task StartAsync(CancellationToken cancellationToken)
    {
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

    public override async ValueTask DisposeAsync()
    {
        _store?.Dispose();
        await HeraldEventStoreContender.DropSchemaAsync(connectionString, _schema);
    }

    protected override async Task AppendBatchAsync(int size, CancellationToken cancellationToken)
    {
        var events = new object[size];
        for (var i = 0; i < events.Length; i++)
        {
            events[i] = AccountCredited.Next(Interlocked.Increment(ref _sequence));
        }

        await using var session = Store.LightweightSession();
        session.Events.StartStream(Guid.CreateVersion7(), events);
        await session.SaveChangesAsync(cancellationToken);
        Added(size);
    }

    protected override async Task AppendOneAsync(int writer, int index, CancellationToken cancellationToken)
    {
        await using var session = Store.LightweightSession();
        session.Events.Append(_streams[writer % _streams.Length][index % 64], AccountCredited.Next(Interlocked.Increment(ref _sequence)));
        await session.SaveChangesAsync(cancellationToken);
        Added(1);
    }

    protected override async Task<int> ReadMiddleAsync(int events, CancellationToken cancellationToken)
    {
        // Marten's sequence is dense (one number per event), so the middle is half the count.
        var from = Count / 2;
        await using var session = Store.QuerySession();
        var count = 0;
        await foreach (var e in session.Events.QueryAllRawEvents().Where(e => e.Sequence > from).OrderBy(e => e.Sequence).Take(events).ToAsyncEnumerable(cancellationToken))
        {
            count += e.Data is AccountCredited ? 1 : 0;
        }

        return count;
    }
}
