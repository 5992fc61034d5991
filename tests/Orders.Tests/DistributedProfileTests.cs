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
