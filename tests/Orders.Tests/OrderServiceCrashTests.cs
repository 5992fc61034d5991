using System.Collections.Concurrent;
using System.Net;
using System.Net.Http.Json;
using Herald.EventSourcing;
using Herald.EventSourcing.Aggregates;
using Herald.Projections;
using Herald.Reliability.DeadLetters;
using Microsoft.Extensions.DependencyInjection;
using Orders.Api;
using Orders.Domain;
using Orders.Fulfilment;
using Orders.ReadModel;
using Xunit.Abstractions;

namespace Orders.Tests;

/// <summary>
/// The order service killed with SIGKILL at random moments while orders are in flight, and restarted, on both profiles.
/// Afterwards every order that got a 202 (or whose POST was cut off and is retried with its Idempotency-Key) reaches a
/// final state, no payment is charged twice and no stock reserved twice, the read model matches the event store, no
/// order exists twice, nothing is in the dead letters (every input here is valid), and the "orders per status per minute"
/// stream, killed and resumed with the service, serves exactly the counts of the log.
/// </summary>
public sealed class OrderServiceCrashTests(ITestOutputHelper output)
{
    private const int Crashes = 3;
    private const int Clients = 4;
    private static readonly TimeSpan SettleDeadline = TimeSpan.FromSeconds(120);

    [Fact]
    public async Task Embedded_KilledAtRandomMomentsWithOrdersInFlight_EveryAcceptedOrderEndsOnce()
    {
        var file = Path.Combine(Path.GetTempPath(), $"herald-orders-crash-{Guid.NewGuid():N}.db");
        try
        {
            await CrashAndCheckAsync(["--Herald:Profile", "embedded", "--Herald:Sqlite", file]);
        }
        finally
        {
            foreach (var path in Directory.EnumerateFiles(Path.GetDirectoryName(file)!, Path.GetFileName(file) + "*"))
            {
                File.Delete(path);
            }

            // The leaders' lock files of UseSqlite's leader election.
            if (Directory.Exists(file + "-leaders"))
            {
                Directory.Delete(file + "-leaders", recursive: true);
            }
        }
    }

    [Fact]
    public async Task Distributed_KilledAtRandomMomentsWithOrdersInFlight_EveryAcceptedOrderEndsOnce()
    {
        var run = Guid.NewGuid().ToString("N")[..10];
        var postgres = Environment.GetEnvironmentVariable("HERALD_TEST_POSTGRES") is { Length: > 0 } cs
            ? cs
            : "Host=127.0.0.1;Port=5432;Username=herald;Password=herald;Database=herald";
        var rabbit = Environment.GetEnvironmentVariable("HERALD_TEST_RABBITMQ") is { Length: > 0 } uri ? uri : "amqp://guest:guest@127.0.0.1:5672/";
        var schema = $"orders_crash_{run}";
        try
        {
            await CrashAndCheckAsync(["--Herald:Profile", "distributed", "--Herald:Postgres", postgres, "--Herald:Schema", schema, "--Herald:RabbitMq", rabbit, "--Herald:Endpoint", $"orders-crash-{run}"]);
        }
        finally
        {
            await using var connection = new Npgsql.NpgsqlConnection(postgres);
            await connection.OpenAsync();
            await using var drop = new Npgsql.NpgsqlCommand($"DROP SCHEMA IF EXISTS {schema} CASCADE", connection);
            await drop.ExecuteNonQueryAsync();

            // The endpoint's queue is durable and bound to the shared event exchanges: left behind, it would collect every
            // order event any later run publishes on this broker.
            await using var amqp = await new RabbitMQ.Client.ConnectionFactory { Uri = new Uri(rabbit) }.CreateConnectionAsync();
            await using var channel = await amqp.CreateChannelAsync();
            await channel.QueueDeleteAsync($"orders-crash-{run}", ifUnused: false, ifEmpty: false);
        }
    }

    private sealed class Traffic
    {
        private int _next;

        public string Run { get; } = Guid.NewGuid().ToString("N")[..8];

        // Accepted: order id by idempotency key. Unknown: POSTs cut off by a kill (or refused while in flight), retried later.
        public ConcurrentDictionary<string, Guid> Accepted { get; } = new();

        public ConcurrentDictionary<string, PlaceOrderRequest> Unknown { get; } = new();

        public (string Key, PlaceOrderRequest Request) Next()
        {
            var n = Interlocked.Increment(ref _next);
            // One in five by the customer whose card is declined: those sagas compensate, which a crash may interrupt too.
            var customer = n % 5 == 0 ? Catalog.BadCardCustomer : "ada";
            return ($"crash-{Run}-{n}", new PlaceOrderRequest(customer, [new OrderLineRequest("keyboard", 1 + (n % 3)), new OrderLineRequest("cable", 2)]));
        }
    }

    private async Task CrashAndCheckAsync(string[] profile)
    {
        var seed = Environment.TickCount;
        output.WriteLine($"seed {seed} (the kill moments)");
        var random = new Random(seed);
        var traffic = new Traffic();

        for (var crash = 1; crash <= Crashes; crash++)
        {
            var service = await OrderServiceProcess.StartAsync(profile);
            using var http = new HttpClient { BaseAddress = service.Address, Timeout = TimeSpan.FromSeconds(30) };
            await ResolveUnknownAsync(http, traffic);
            var before = traffic.Accepted.Count;
            using var stop = new CancellationTokenSource();
            var clients = Enumerable.Range(0, Clients).Select(_ => PostUntilStoppedAsync(http, traffic, stop.Token)).ToArray();
            // Orders are flowing (some accepted in this life) before the kill comes, at a random moment after that.
            await Eventually.UntilAsync(() => Task.FromResult(traffic.Accepted.Count >= before + Clients), "orders are accepted in this life", TimeSpan.FromSeconds(60));
            await Task.Delay(random.Next(50, 1_500));
            await service.KillAsync();
            await stop.CancelAsync();
            await Task.WhenAll(clients);
            await service.DisposeAsync();
            output.WriteLine($"kill {crash}: {traffic.Accepted.Count} accepted so far, {traffic.Unknown.Count} cut off");
        }

        // The last life: retry what was cut off, then every accepted order must reach its end.
        List<StatusCount> served;
        await using (var service = await OrderServiceProcess.StartAsync(profile))
        {
            using var http = new HttpClient { BaseAddress = service.Address, Timeout = TimeSpan.FromSeconds(30) };
            await ResolveUnknownAsync(http, traffic);
            var pending = new HashSet<Guid>(traffic.Accepted.Values);
            await Eventually.UntilAsync(
                async () =>
                {
                    foreach (var id in pending.ToArray())
                    {
                        using var response = await http.GetAsync($"/orders/{id}");
                        if (response.StatusCode == HttpStatusCode.OK
                            && OrderStates.IsFinal((await response.Content.ReadFromJsonAsync<OrderView>())!.Status))
                        {
                            pending.Remove(id);
                        }
                    }

                    return pending.Count == 0;
                },
                () => $"every accepted order reached a final state ({pending.Count} did not within {SettleDeadline}):\n{string.Join('\n', service.Tail)}",
                SettleDeadline);

            served = await SettledStatsAsync(http, traffic.Accepted.Values.Distinct().Count());
        }

        await CheckAsync(profile, traffic, served);
    }

    // The stats stream was killed with the service and resumed each time: once it has seen every order placed and ended,
    // what it serves is compared with the log (CheckAsync).
    private static async Task<List<StatusCount>> SettledStatsAsync(HttpClient http, int orders)
    {
        List<StatusCount>? served = null;
        await Eventually.UntilAsync(
            async () =>
            {
                using var response = await http.GetAsync("/stats/orders-per-status");
                served = response.IsSuccessStatusCode ? await response.Content.ReadFromJsonAsync<List<StatusCount>>() : null;
                return served is not null
                    && served.Total(OrderStates.Placed) >= orders
                    && served.Total(OrderStates.Confirmed) + served.Total(OrderStates.Cancelled) >= orders;
            },
            () => $"the stats stream counts the {orders} orders placed and ended (placed: {served?.Total(OrderStates.Placed)}, ended: {served?.Total(OrderStates.Confirmed) + served?.Total(OrderStates.Cancelled)})",
            TimeSpan.FromSeconds(60));
        return served!;
    }

    // Each client posts one order after another until the service dies under it (its POST cut off) or the round stops.
    private static async Task PostUntilStoppedAsync(HttpClient http, Traffic traffic, CancellationToken stop)
    {
        while (!stop.IsCancellationRequested)
        {
            var (key, request) = traffic.Next();
            if (!await TryPlaceAsync(http, traffic, key, request, CancellationToken.None))
            {
                traffic.Unknown[key] = request;
                return;
            }
        }
    }

    // True when the POST got its answer (202); false when it was cut off or refused while a first attempt is in flight.
    private static async Task<bool> TryPlaceAsync(HttpClient http, Traffic traffic, string key, PlaceOrderRequest request, CancellationToken cancellationToken)
    {
        using var message = new HttpRequestMessage(HttpMethod.Post, "/orders") { Content = JsonContent.Create(request) };
        message.Headers.Add("Idempotency-Key", key);
        try
        {
            using var response = await http.SendAsync(message, cancellationToken);
            if (response.StatusCode == HttpStatusCode.Conflict)
            {
                return false;
            }

            Assert.True(response.StatusCode == HttpStatusCode.Accepted, $"POST /orders answered {(int)response.StatusCode}: {await response.Content.ReadAsStringAsync(cancellationToken)}");
            var placed = (await response.Content.ReadFromJsonAsync<PlaceOrderResponse>(cancellationToken))!;
            // The same key must always name the same order, whichever life of the service answered.
            Assert.Equal(placed.OrderId, traffic.Accepted.GetOrAdd(key, placed.OrderId));
            return true;
        }
        catch (HttpRequestException)
        {
            return false;
        }
        catch (TaskCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            return false;
        }
    }

    // A POST cut off by a kill may or may not have placed its order: the client retries it with the same key, which
    // either replays the answer or places it now; never a second order.
    private static async Task ResolveUnknownAsync(HttpClient http, Traffic traffic)
    {
        // A key claimed by the life that was killed is held until its lock expires: retried until then.
        await Eventually.UntilAsync(
            async () =>
            {
                foreach (var (key, request) in traffic.Unknown.ToArray())
                {
                    if (await TryPlaceAsync(http, traffic, key, request, CancellationToken.None))
                    {
                        traffic.Unknown.TryRemove(key, out _);
                    }
                }

                return traffic.Unknown.IsEmpty;
            },
            () => $"every order cut off by a kill was placed or replayed ({traffic.Unknown.Count} were not)");
    }

    // Checked through the service's own stores (the app built, not started), once it is stopped.
    private async Task CheckAsync(string[] profile, Traffic traffic, List<StatusCount> served)
    {
        await using var app = OrderServiceApp.Build(profile);
        var services = app.Services;
        var readModels = services.GetRequiredService<ReadModels>();
        var store = services.GetRequiredService<IEventStore>();
        var ledger = services.GetRequiredService<Ledger>();
        await using var scope = services.CreateAsyncScope();
        var orders = scope.ServiceProvider.GetRequiredService<AggregateRepository<Order>>();

        var ids = traffic.Accepted.Values.Distinct().ToList();
        Assert.Equal(traffic.Accepted.Count, ids.Count);
        var confirmed = 0;
        var cancelled = 0;
        foreach (var id in ids)
        {
            var view = await readModels.GetAsync(OrderProjection.Orders, id.ToString());
            var events = new List<string>();
            await foreach (var recorded in store.ReadStreamAsync(orders.StreamNameFor(id.ToString())))
            {
                events.Add(recorded.EventType);
            }

            var counts = await ledger.CountAsync(id, CancellationToken.None);
            Assert.True(events.Distinct().Count() == events.Count, $"order {id} has an event twice: {string.Join(", ", events)}");
            Assert.True(counts.Payments <= 1 && counts.Reservations <= 1 && counts.Shipments <= 1, $"order {id}: {counts}");
            switch (view!.Status)
            {
                case OrderStates.Confirmed:
                    confirmed++;
                    Assert.Equal("order-confirmed", events[^1]);
                    Assert.True(counts is { Payments: 1, Refunded: 0, Shipments: 1, Reservations: 1, Released: 0 }, $"confirmed order {id}: {counts}");
                    break;
                case OrderStates.Cancelled:
                    cancelled++;
                    Assert.Contains("order-cancelled", events);
                    Assert.True(counts.Refunded == counts.Payments && counts.Released == counts.Reservations && counts.Shipments == 0, $"cancelled order {id}: {counts}");
                    break;
                default:
                    Assert.Fail($"order {id} is {view.Status} in the read model; its events: {string.Join(", ", events)}");
                    break;
            }
        }

        // Nothing but these orders was placed: a retried POST never made a second one.
        var all = 0;
        string? after = null;
        do
        {
            var page = await readModels.QueryAsync(OrderProjection.Orders, new ReadModelQuery { Limit = 500, AfterId = after });
            all += page.Items.Count;
            after = page.NextAfterId;
        }
        while (after is not null);

        var deadLetters = await services.GetRequiredService<IDeadLetterStore>().CountAsync(DeadLetterQuery.All);
        output.WriteLine($"{ids.Count} orders accepted over {Crashes} kills: {confirmed} confirmed, {cancelled} cancelled; {all} orders in the read model; {deadLetters} dead letters");
        Assert.Equal(ids.Count, all);
        Assert.Equal(0, deadLetters);
        Assert.Equal(await StatusCounts.FromLogAsync(store), served);
        Assert.True(cancelled > 0 && confirmed > 0, "both endings were exercised");
    }
}
