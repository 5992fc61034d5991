using System.Net.Http.Json;
using Herald.EventSourcing;
using Herald.Sagas;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Orders.Api;
using Orders.Fulfilment;
using Orders.ReadModel;

namespace Orders.Tests;

/// <summary>One running order service, built by the sample's own <see cref="OrderServiceApp"/>, on a free port of 127.0.0.1.</summary>
public sealed class ServiceInstance : IAsyncDisposable
{
    private ServiceInstance(WebApplication app, HttpClient http, LedgerGate gate)
    {
        App = app;
        Http = http;
        Gate = gate;
    }

    public WebApplication App { get; }

    /// <summary>A client of the instance over real HTTP.</summary>
    public HttpClient Http { get; }

    public IEventStore Events => App.Services.GetRequiredService<IEventStore>();

    public Ledger Ledger => App.Services.GetRequiredService<Ledger>();

    /// <summary>Holds a saga step where it writes a service's table, to act while fulfilment is under way.</summary>
    public LedgerGate Gate { get; }

    public static Task<ServiceInstance> StartAsync(params string[] settings) => StartUnderPathBaseAsync(PathString.Empty, settings);

    /// <summary>Starts an instance whose services <paramref name="customize"/> changes after the sample registered its own.</summary>
    public static Task<ServiceInstance> StartAsync(Action<IServiceCollection> customize, params string[] settings) =>
        StartUnderPathBaseAsync(PathString.Empty, settings, customize);

    /// <summary>
    /// Starts an instance whose whole app is under <paramref name="pathBase"/> (<c>UsePathBase</c> first in the pipeline, as an
    /// app behind a reverse proxy forwarding a prefix is hosted). <see cref="Http"/> still addresses the server's root.
    /// </summary>
    public static Task<ServiceInstance> StartUnderPathBaseAsync(PathString pathBase, params string[] settings) =>
        StartUnderPathBaseAsync(pathBase, settings, customize: null);

    private static async Task<ServiceInstance> StartUnderPathBaseAsync(PathString pathBase, string[] settings, Action<IServiceCollection>? customize)
    {
        string[] args = ["--urls", "http://127.0.0.1:0", .. settings];
        var gate = new LedgerGate();
        var app = OrderServiceApp.Build(args, builder =>
        {
            builder.Logging.ClearProviders();
            gate.Install(builder.Services);
            if (pathBase.HasValue)
            {
                builder.Services.AddSingleton<IStartupFilter>(new PathBaseFirst(pathBase));
            }

            customize?.Invoke(builder.Services);
        });
        await app.StartAsync();
        var http = new HttpClient { BaseAddress = new Uri(Banner.Address(app)), Timeout = TimeSpan.FromSeconds(30) };
        return new ServiceInstance(app, http, gate);
    }

    /// <summary>Polls <c>GET /orders/{id}</c> until the order is Confirmed or Cancelled.</summary>
    public Task<OrderView> WaitForFinalStateAsync(Guid id, TimeSpan? timeout = null) =>
        WaitForOrderAsync(id, o => OrderStates.IsFinal(o.Status), "reaches a final state", timeout);

    /// <summary>Polls <c>GET /orders/{id}</c> until the order is as <paramref name="expected"/> says.</summary>
    public async Task<OrderView> WaitForOrderAsync(Guid id, Func<OrderView, bool> expected, string what, TimeSpan? timeout = null)
    {
        OrderView? order = null;
        await Eventually.UntilAsync(
            async () =>
            {
                using var response = await Http.GetAsync($"/orders/{id}");
                order = response.IsSuccessStatusCode ? await response.Content.ReadFromJsonAsync<OrderView>() : null;
                return order is not null && expected(order);
            },
            () => $"order {id} {what} (last seen: {order?.Status ?? "not in the read model"})",
            timeout);
        return order!;
    }

    /// <summary>Waits until the order's fulfilment saga has ended, and returns how.</summary>
    public async Task<SagaStatus> WaitForFulfilmentToEndAsync(Guid id)
    {
        var sagas = App.Services.GetRequiredService<ISagaStore>();
        SagaInstance? saga = null;
        await Eventually.UntilAsync(
            async () => (saga = await sagas.LoadAsync(FulfilmentSaga.Name, id.ToString())) is { Status: not (SagaStatus.Running or SagaStatus.Compensating) },
            () => $"the fulfilment of order {id} ends (last seen: {saga?.Status.ToString() ?? "not started"})");
        return saga!.Status;
    }

    /// <summary>The events in the whole log that carry this correlation id.</summary>
    public async Task<List<RecordedEvent>> EventsCorrelatedToAsync(string correlationId)
    {
        var found = new List<RecordedEvent>();
        await foreach (var recorded in Events.ReadAllAsync())
        {
            if (recorded.Envelope.CorrelationId == correlationId)
            {
                found.Add(recorded);
            }
        }

        return found;
    }

    /// <summary>What <c>GET /stats/orders-per-status</c> should serve, counted from the whole log.</summary>
    public Task<List<StatusCount>> OrderEventsPerStatusPerMinuteAsync() => StatusCounts.FromLogAsync(Events);

    /// <summary>
    /// Deletes the stored response of <paramref name="key"/> on <c>POST /orders</c> (anonymous), as its expiration does, or as
    /// a crash before it was stored leaves it; true when there was one.
    /// </summary>
    public async Task<bool> ForgetStoredOrderResponseAsync(string key)
    {
        // The store's key as WithIdempotencyKey makes it: scoped to the route and the (anonymous) user, hashed, and as the SQL
        // stores keep it: after the application's prefix, its name with its length (docs/aspnetcore.md).
        var application = App.Services.GetRequiredService<Microsoft.Extensions.Hosting.IHostEnvironment>().ApplicationName;
        var prefix = string.IsNullOrEmpty(application) ? "" : $"{application.Length}:{application}:";
        var storeKey = prefix + "herald-http:" + Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(System.Text.Encoding.UTF8.GetBytes($"route\nPOST /orders\n\n{key}")));
        var settings = App.Services.GetRequiredService<OrderServiceSettings>();
        if (settings.Profile == OrderServiceSettings.Embedded)
        {
            await using var sqlite = new Microsoft.Data.Sqlite.SqliteConnection($"Data Source={settings.SqlitePath};Pooling=False");
            await sqlite.OpenAsync();
            await using var delete = sqlite.CreateCommand();
            delete.CommandText = "PRAGMA busy_timeout = 30000; DELETE FROM herald_idempotency WHERE idempotency_key = $key AND completed = 1";
            delete.Parameters.AddWithValue("$key", storeKey);
            return await delete.ExecuteNonQueryAsync() == 1;
        }

        await using var postgres = new Npgsql.NpgsqlConnection(settings.Postgres);
        await postgres.OpenAsync();
        await using var command = new Npgsql.NpgsqlCommand($"DELETE FROM \"{settings.Schema}\".idempotency WHERE idempotency_key = $1 AND completed", postgres);
        command.Parameters.AddWithValue(storeKey);
        return await command.ExecuteNonQueryAsync() == 1;
    }

    // A startup filter runs before the routing WebApplication adds itself, so routes match below the path base.
    private sealed class PathBaseFirst(PathString pathBase) : IStartupFilter
    {
        public Action<IApplicationBuilder> Configure(Action<IApplicationBuilder> next) => app =>
        {
            app.UsePathBase(pathBase);
            next(app);
        };
    }

    public async ValueTask DisposeAsync()
    {
        Http.Dispose();
        await App.StopAsync();
        await App.DisposeAsync();
    }
}
