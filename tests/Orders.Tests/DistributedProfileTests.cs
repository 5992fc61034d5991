using System.Net;
using System.Net.Http.Json;
using Npgsql;
using Orders.Api;
using Orders.ReadModel;

namespace Orders.Tests;

/// <summary>
/// The distributed profile's servers: PostgreSQL (env HERALD_TEST_POSTGRES) and RabbitMQ (env HERALD_TEST_RABBITMQ, its
/// management API HERALD_TEST_RABBITMQ_MANAGEMENT to delete the test's queues), by default those scripts/services.sh starts.
/// Each fixture takes a schema and a queue name of its own, so runs never share state.
/// </summary>
public static class TestServers
{
    public static string Postgres { get; } = Environment.GetEnvironmentVariable("HERALD_TEST_POSTGRES") is { Length: > 0 } pg
        ? pg
        : "Host=127.0.0.1;Port=5432;Username=herald;Password=herald;Database=herald";

    public static string RabbitMq { get; } = Environment.GetEnvironmentVariable("HERALD_TEST_RABBITMQ") is { Length: > 0 } amqp
        ? amqp
        : "amqp://guest:guest@127.0.0.1:5672/";

    private static string Management { get; } = Environment.GetEnvironmentVariable("HERALD_TEST_RABBITMQ_MANAGEMENT") is { Length: > 0 } http
        ? http
        : "http://guest:guest@127.0.0.1:15672/";

    public static string[] DistributedSettings(string schema, string endpoint) =>
        ["--Herald:Profile", "distributed", "--Herald:Postgres", Postgres, "--Herald:RabbitMq", RabbitMq, "--Herald:Schema", schema, "--Herald:Endpoint", endpoint];

    public static async Task DropSchemaAsync(string schema)
    {
        await using var connection = new NpgsqlConnection(Postgres);
        await connection.OpenAsync();
        await using var command = new NpgsqlCommand($"DROP SCHEMA IF EXISTS \"{schema}\" CASCADE", connection);
        await command.ExecuteNonQueryAsync();
    }

    /// <summary>Deletes the queues whose name starts with the endpoint's (its retry and dead-letter queues too).</summary>
    public static async Task DeleteQueuesAsync(string endpoint)
    {
        var management = new Uri(Management);
        using var http = new HttpClient { BaseAddress = new Uri(management.GetLeftPart(UriPartial.Authority) + "/") };
        var user = Uri.UnescapeDataString(management.UserInfo);
        http.DefaultRequestHeaders.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Basic", Convert.ToBase64String(System.Text.Encoding.UTF8.GetBytes(user)));
        var queues = await http.GetFromJsonAsync<List<QueueName>>("api/queues/%2F?columns=name") ?? [];
        foreach (var queue in queues.Where(q => q.Name.StartsWith(endpoint, StringComparison.Ordinal)))
        {
            using var _ = await http.DeleteAsync($"api/queues/%2F/{Uri.EscapeDataString(queue.Name)}");
        }
    }

    private sealed record QueueName(string Name);
}

/// <summary>One distributed instance on a schema and queue of its own.</summary>
public sealed class DistributedServiceFixture : IAsyncLifetime
{
    public string Schema { get; } = "orders_test_" + Guid.NewGuid().ToString("N")[..12];

    public string Endpoint { get; } = "orders-test-" + Guid.NewGuid().ToString("N")[..12];

    public ServiceInstance Service { get; private set; } = null!;

    public async Task InitializeAsync() => Service = await ServiceInstance.StartAsync(TestServers.DistributedSettings(Schema, Endpoint));

    public async Task DisposeAsync()
    {
        await Service.DisposeAsync();
        await TestServers.DropSchemaAsync(Schema);
        await TestServers.DeleteQueuesAsync(Endpoint);
    }
}

[Collection("distributed")]
public sealed class DistributedProfileTests(DistributedServiceFixture fixture) : OrderServiceSpecification, IClassFixture<DistributedServiceFixture>
{
    protected override ServiceInstance Service => fixture.Service;

    [Fact]
    public async Task TheLinkOfAnAcceptedOrder_WhileTheReadModelCannotCatchUp_Answers503WithRetryAfter_ThenTheOrder()
    {
        // Another session holds the orders read model's tables locked against writes (reads go on): the projection cannot
        // write the order, so the GET waits its limit and answers 503 with a Retry-After, not 404 and not a hang. A first order
        // read back makes sure the table exists (it is created at its first write).
        using (var first = await PostOrderAsync(new { customerId = "ada", lines = new[] { new { sku = "cable", quantity = 1 } } }))
        {
            Assert.Equal(HttpStatusCode.Accepted, first.StatusCode);
            var firstId = (await first.Content.ReadFromJsonAsync<PlaceOrderResponse>())!.OrderId;
            await Service.WaitForOrderAsync(firstId, _ => true, "is in the read model");
        }

        await using var connection = new NpgsqlConnection(TestServers.Postgres);
        await connection.OpenAsync();
        var holding = await connection.BeginTransactionAsync();
        var tables = new List<string>();
        await using (var find = new NpgsqlCommand("SELECT tablename FROM pg_tables WHERE schemaname = $1 AND tablename LIKE 'rm\\_orders\\_g%'", connection, holding))
        {
            find.Parameters.AddWithValue(fixture.Schema);
            await using var reader = await find.ExecuteReaderAsync();
            while (await reader.ReadAsync())
            {
                tables.Add(reader.GetString(0));
            }
        }

        Assert.NotEmpty(tables);
        await using (var lockTables = new NpgsqlCommand(
            $"LOCK TABLE {string.Join(", ", tables.Select(t => $"\"{fixture.Schema}\".\"{t}\""))} IN EXCLUSIVE MODE", connection, holding))
        {
            await lockTables.ExecuteNonQueryAsync();
        }

        Uri link;
        try
        {
            using var placed = await PostOrderAsync(new { customerId = "ada", lines = new[] { new { sku = "cable", quantity = 1 } } });
            Assert.Equal(HttpStatusCode.Accepted, placed.StatusCode);
            link = placed.Headers.Location!;

            using var read = await Service.Http.GetAsync(link);
            var body = await read.Content.ReadAsStringAsync();
            Assert.True(read.StatusCode == HttpStatusCode.ServiceUnavailable, $"GET while the read model is held answered {(int)read.StatusCode}: {body}");
            Assert.Equal(TimeSpan.FromSeconds(1), read.Headers.RetryAfter?.Delta);
            Assert.Equal("application/problem+json", read.Content.Headers.ContentType?.MediaType);
            Assert.Contains("not caught up", body, StringComparison.Ordinal);
        }
        finally
        {
            await holding.RollbackAsync();
        }

        // Released, the projection writes the order and the same link answers it.
        var id = Guid.Parse(link.OriginalString["/orders/".Length..]);
        var order = await Service.WaitForOrderAsync(id, _ => true, "is readable once the read model is released");
        Assert.Equal(id.ToString(), order.Id);
    }
}

/// <summary>Two instances of the distributed profile in one process, on one schema and one queue, sharing the work.</summary>
[Collection("distributed")]
public sealed class TwoInstanceTests
{
    [Fact]
    public async Task TwoInstances_ShareTheWork_EveryOrderEndsOnce_AndNothingIsChargedTwice()
    {
        var schema = "orders_test_" + Guid.NewGuid().ToString("N")[..12];
        var endpoint = "orders-test-" + Guid.NewGuid().ToString("N")[..12];
        try
        {
            await using var first = await ServiceInstance.StartAsync(TestServers.DistributedSettings(schema, endpoint));
            await using var second = await ServiceInstance.StartAsync(TestServers.DistributedSettings(schema, endpoint));
            ServiceInstance[] instances = [first, second];

            // 24 orders, every fourth declined, posted alternately to each instance by two clients at once.
            var placed = new System.Collections.Concurrent.ConcurrentBag<(Guid Id, bool Declined)>();
            await Parallel.ForEachAsync(Enumerable.Range(0, 24), new ParallelOptions { MaxDegreeOfParallelism = 4 }, async (i, token) =>
            {
                var declined = i % 4 == 3;
                using var request = new HttpRequestMessage(HttpMethod.Post, "/orders")
                {
                    Content = JsonContent.Create(new { customerId = declined ? "bad-card" : "alan", lines = new[] { new { sku = "mouse", quantity = 1 + (i % 3) } } }),
                };
                using var response = await instances[i % 2].Http.SendAsync(request, token);
                Assert.Equal(HttpStatusCode.Accepted, response.StatusCode);
                placed.Add(((await response.Content.ReadFromJsonAsync<PlaceOrderResponse>(token))!.OrderId, declined));
            });

            foreach (var (id, declined) in placed)
            {
                // Either instance answers from the one read model.
                var order = await instances[id.GetHashCode() & 1].WaitForFinalStateAsync(id);
                Assert.Equal(declined ? OrderStates.Cancelled : OrderStates.Confirmed, order.Status);
                var history = (await instances[(id.GetHashCode() + 1) & 1].Http.GetFromJsonAsync<OrderHistory>($"/orders/{id}/history"))!;
                Assert.Single(history.Events, e => e.Type is "order-confirmed" or "order-cancelled");
                Assert.Single(history.Events, e => e.Type == "stock-reserved");
                Assert.True(history.Events.Count(e => e.Type == "payment-charged") == (declined ? 0 : 1), $"order {id}: one charge when confirmed, none when declined");
            }

            var counts = await first.Ledger.CountAsync(null, CancellationToken.None);
            Assert.Equal(18, counts.Payments);
            Assert.Equal(0, counts.Refunded);
            Assert.Equal(24, counts.Reservations);
            Assert.Equal(6, counts.Released);

            // Both instances ran fulfilment sagas (RabbitMQ hands the queue's messages to both consumers).
            var byInstance = await first.Ledger.PaymentsByInstanceAsync(CancellationToken.None);
            Assert.Equal(2, byInstance.Count);
        }
        finally
        {
            await TestServers.DropSchemaAsync(schema);
            await TestServers.DeleteQueuesAsync(endpoint);
        }
    }
}

/// <summary>The stats stream runs on one instance of a schema at a time; another takes it over when that one stops.</summary>
[Collection("distributed")]
public sealed class StatsStreamLeaderTests
{
    [Fact]
    public async Task OrdersPerStatus_IsServedByOneInstanceAtATime_AndTheOtherTakesOverWithTheCommittedState()
    {
        var schema = "orders_test_" + Guid.NewGuid().ToString("N")[..12];
        var endpoint = "orders-test-" + Guid.NewGuid().ToString("N")[..12];
        var instances = new List<ServiceInstance>();
        try
        {
            instances.Add(await ServiceInstance.StartAsync(TestServers.DistributedSettings(schema, endpoint)));
            instances.Add(await ServiceInstance.StartAsync(TestServers.DistributedSettings(schema, endpoint)));
            using (var response = await instances[0].Http.PostAsJsonAsync("/orders", new { customerId = "alan", lines = new[] { new { sku = "mouse", quantity = 1 } } }))
            {
                Assert.Equal(HttpStatusCode.Accepted, response.StatusCode);
                await instances[0].WaitForFinalStateAsync((await response.Content.ReadFromJsonAsync<PlaceOrderResponse>())!.OrderId);
            }

            // One answers from its stream (which has counted the log), the other says it does not run it.
            var statuses = new HttpStatusCode[2];
            await Eventually.UntilAsync(
                async () =>
                {
                    for (var i = 0; i < 2; i++)
                    {
                        using var response = await instances[i].Http.GetAsync("/stats/orders-per-status");
                        statuses[i] = response.StatusCode;
                    }

                    return statuses.Order().SequenceEqual([HttpStatusCode.OK, HttpStatusCode.ServiceUnavailable]);
                },
                () => $"one instance serves the stats and the other answers 503 (they answered {string.Join(" and ", statuses)})");
            var leader = statuses[0] == HttpStatusCode.OK ? 0 : 1;
            using (var refused = await instances[1 - leader].Http.GetAsync("/stats/orders-per-status"))
            {
                Assert.Equal(HttpStatusCode.ServiceUnavailable, refused.StatusCode);
                Assert.Equal("application/problem+json", refused.Content.Headers.ContentType?.MediaType);
            }

            // The leader stops; the other takes the stream over from its last commit and serves what the log holds.
            await instances[leader].DisposeAsync();
            var follower = instances[1 - leader];
            instances.RemoveAt(leader);
            List<StatusCount>? served = null;
            List<StatusCount> stored = [];
            await Eventually.UntilAsync(
                async () =>
                {
                    stored = await follower.OrderEventsPerStatusPerMinuteAsync();
                    using var response = await follower.Http.GetAsync("/stats/orders-per-status");
                    served = response.IsSuccessStatusCode ? await response.Content.ReadFromJsonAsync<List<StatusCount>>() : null;
                    return served is not null && served.SequenceEqual(stored);
                },
                () => $"the other instance serves the {stored.Sum(c => c.Count)} order events of the log (served: {served?.Sum(c => c.Count).ToString(System.Globalization.CultureInfo.InvariantCulture) ?? "503"})");
            Assert.Equal(1, served!.Total(OrderStates.Placed));
        }
        finally
        {
            foreach (var instance in instances)
            {
                await instance.DisposeAsync();
            }

            await TestServers.DropSchemaAsync(schema);
            await TestServers.DeleteQueuesAsync(endpoint);
        }
    }
}
