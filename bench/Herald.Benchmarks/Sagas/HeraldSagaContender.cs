using System.Diagnostics.Metrics;
using Herald.Benchmarks.EventStore;
using Herald.Benchmarks.InProcess;
using Herald.Diagnostics;
using Herald.Hosting;
using Herald.Sagas;
using Herald.Sqlite;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using IHeraldBus = Herald.Handling.IMessageBus;

namespace Herald.Benchmarks.Sagas;

/// <summary>What Herald's order saga keeps per instance (as JSON, in the saga store).</summary>
public sealed class HeraldOrderData
{
    public string? Customer { get; set; }

    public decimal Total { get; set; }

    public string? PaymentReference { get; set; }

    public string? TrackingNumber { get; set; }
}

/// <summary>
/// Herald through the public API: a host with <c>AddHerald(h => h.AddSaga(machine))</c> on the default in-memory transport,
/// the saga store of the persistence it is given (in memory, SQLite or PostgreSQL), events published with
/// <c>IMessageBus.PublishAsync</c>.
/// </summary>
internal sealed class HeraldSagaContender : ISagaContender
{
    private const string SagaName = "bench-orders";

    private readonly Action<HeraldBuilder> _persistence;
    private readonly Func<ValueTask> _cleanUp;
    private readonly string _endpoint;
    private IHost? _host;
    private IHeraldBus? _bus;
    private FinishedMessages? _finished;

    private HeraldSagaContender(string name, string setup, Action<HeraldBuilder> persistence, Func<ValueTask> cleanUp)
    {
        Name = name;
        Setup = setup;
        _persistence = persistence;
        _cleanUp = cleanUp;
        _endpoint = "bench-sagas-" + Guid.NewGuid().ToString("N")[..8];
    }

    public string Name { get; }

    public string Setup { get; }

    public HandledCounter Finished { get; } = new();

    public static HeraldSagaContender InMemory() =>
        new(
            "Herald (in-memory)",
            "`services.AddHerald(h => h.AddSaga(machine))`: the default in-memory transport and saga store (`InMemorySagaStore`, which keeps each instance's data as JSON bytes, so every transition deserializes and serializes it) and default options " +
            "(MaxConcurrency = cores, Prefetch 64), JSON bodies; `SagaStateMachine.Create<HeraldOrderData>` with `Correlate<T>(e => e.OrderId.ToString())` per event, `Initially<OrderSubmitted>`, two `During` states and `Final`; " +
            "each action copies the event's fields into the data; `IMessageBus.PublishAsync`. Finished: Herald's own `herald.messages.processed` counter (recorded after the unit of work committed and the delivery was acked), read with a `MeterListener`.",
            _ => { },
            () => ValueTask.CompletedTask);

    public static HeraldSagaContender Sqlite()
    {
        var path = Path.Combine(Path.GetTempPath(), $"herald-bench-sagas-{Guid.NewGuid():N}.db");
        var defaults = new SqliteStoreOptions();
        return new HeraldSagaContender(
            "Herald (SQLite)",
            $"as **Herald (in-memory)**, with `h.UseSqlite(temp file)`: the saga store and the unit of work on that file (defaults: WAL, synchronous {defaults.Synchronous}, grouped commits of up to {defaults.MaxWritesPerTransaction} writes); each transition's save commits before its event is finished. The transport stays in memory.",
            h => h.UseSqlite(path),
            () => HeraldEventStoreContender.DeleteSqliteFiles(path));
    }

    public static HeraldSagaContender Postgres(string connectionString)
    {
        var schema = $"herald_bench_{Guid.NewGuid():N}"[..24];
        return new HeraldSagaContender(
            "Herald (PostgreSQL)",
            "as **Herald (in-memory)**, with `h.UsePostgres(cs, o => o.Schema = fresh)`: the saga store and the unit of work in a fresh schema (dropped afterwards), defaults otherwise; each transition loads the instance, then saves it in the message's transaction, which commits before its event is finished. The transport stays in memory.",
            h => h.UsePostgres(connectionString, o => o.Schema = schema),
            () => HeraldEventStoreContender.DropSchemaAsync(connectionString, schema));
    }

    public async Task StartAsync(CancellationToken cancellationToken)
    {
        _finished = new FinishedMessages(_endpoint, Finished);
        var builder = Hosts.CreateBuilder();
        builder.Services.AddHerald(h =>
        {
            h.Configure(o => o.EndpointName = _endpoint);
            _persistence(h);
            h.AddSaga(Machine());
        });
        _host = builder.Build();
        await _host.StartAsync(cancellationToken).ConfigureAwait(false);
        _bus = _host.Services.GetRequiredService<IHeraldBus>();
    }

    public ValueTask PublishAsync<TEvent>(TEvent message, CancellationToken cancellationToken)
        where TEvent : class =>
        (_bus ?? throw new InvalidOperationException("Not started.")).PublishAsync(message, cancellationToken: cancellationToken);

    public async Task<string?> StateOfAsync(Guid orderId, CancellationToken cancellationToken)
    {
        var store = (_host ?? throw new InvalidOperationException("Not started.")).Services.GetRequiredService<ISagaStore>();
        return (await store.LoadAsync(SagaName, orderId.ToString(), cancellationToken).ConfigureAwait(false))?.State;
    }

    public async ValueTask DisposeAsync()
    {
        if (_host is not null)
        {
            await _host.StopAsync().ConfigureAwait(false);
            _host.Dispose();
        }

        _finished?.Dispose();
        await _cleanUp().ConfigureAwait(false);
    }

    private static SagaStateMachine<HeraldOrderData> Machine() =>
        SagaStateMachine.Create<HeraldOrderData>(SagaName, m => m
            .Correlate<OrderSubmitted>(e => e.OrderId.ToString())
            .Correlate<PaymentAccepted>(e => e.OrderId.ToString())
            .Correlate<OrderShipped>(e => e.OrderId.ToString())
            .Initially<OrderSubmitted>(SagaWorkload.AwaitingPayment, (saga, submitted) =>
            {
                saga.Data.Customer = submitted.Customer;
                saga.Data.Total = submitted.Total;
                return ValueTask.CompletedTask;
            })
            .During(SagaWorkload.AwaitingPayment, s => s.When<PaymentAccepted>(SagaWorkload.AwaitingShipment, (saga, payment) =>
            {
                saga.Data.PaymentReference = payment.PaymentReference;
                return ValueTask.CompletedTask;
            }))
            .During(SagaWorkload.AwaitingShipment, s => s.When<OrderShipped>(SagaWorkload.Shipped, (saga, shipped) =>
            {
                saga.Data.TrackingNumber = shipped.TrackingNumber;
                return ValueTask.CompletedTask;
            }))
            .Final(SagaWorkload.Shipped));

    /// <summary>
    /// Counts the messages this host's endpoint finished, from Herald's own meter: the processed counter is recorded once
    /// the unit of work (with the saga's save) committed and the delivery was acked. A dead letter fails the run.
    /// </summary>
    private sealed class FinishedMessages : IDisposable
    {
        private readonly MeterListener _listener = new();

        public FinishedMessages(string endpoint, HandledCounter counter)
        {
            _listener.InstrumentPublished = (instrument, listener) =>
            {
                if (instrument.Meter.Name == HeraldDiagnostics.Name && instrument.Name is MetricNames.MessagesProcessed or MetricNames.MessagesDeadLettered)
                {
                    listener.EnableMeasurementEvents(instrument);
                }
            };
            _listener.SetMeasurementEventCallback<long>((instrument, _, tags, _) =>
            {
                foreach (var tag in tags)
                {
                    if (tag.Key == MetricNames.EndpointTag && !Equals(tag.Value, endpoint))
                    {
                        return;
                    }
                }

                if (instrument.Name == MetricNames.MessagesProcessed)
                {
                    counter.Increment();
                }
                else
                {
                    counter.Fail($"A saga event was dead-lettered on {endpoint}.");
                }
            });
            _listener.Start();
        }

        public void Dispose() => _listener.Dispose();
    }
}
