using System.Net;
using System.Net.Http.Json;
using Orders.Api;

namespace Orders.Tests;

/// <summary>
/// The service hosted under a path prefix (<c>UsePathBase("/shop")</c>, as behind a reverse proxy forwarding /shop): the links
/// it answers with carry the prefix, so a client following them reaches the service through the proxy.
/// </summary>
public sealed class PathBaseTests : IAsyncLifetime
{
    private const string PathBase = "/shop";
    private readonly string _directory = Path.Combine(Path.GetTempPath(), "orders-tests-" + Guid.NewGuid().ToString("N")[..12]);
    private ServiceInstance _service = null!;

    public async Task InitializeAsync()
    {
        Directory.CreateDirectory(_directory);
        _service = await ServiceInstance.StartUnderPathBaseAsync(PathBase, "--Herald:Profile", "embedded", "--Herald:Sqlite", Path.Combine(_directory, "orders.db"));
    }

    public async Task DisposeAsync()
    {
        await _service.DisposeAsync();
        Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
        Directory.Delete(_directory, recursive: true);
    }

    [Fact]
    public async Task UnderAPathBase_LocationsAndNextPageLinks_CarryThePathBase()
    {
        // The cancel is answered while fulfilment is held at the payment, so it is accepted (202 with a Location).
        var correlationId = "path-base-" + Guid.NewGuid().ToString("N");
        var hold = _service.Gate.HoldWrite(correlationId, "payments");
        Guid cancelledId;
        try
        {
            using var placed = await PlaceAsync(correlationId);
            cancelledId = (await placed.Content.ReadFromJsonAsync<PlaceOrderResponse>())!.OrderId;
            Assert.Equal($"{PathBase}/orders/{cancelledId}", placed.Headers.Location!.OriginalString);
            await hold.Reached.WaitAsync(Eventually.DefaultTimeout);

            using var cancelled = await _service.Http.PostAsync($"{PathBase}/orders/{cancelledId}/cancel", JsonContent.Create(new { reason = "changed my mind" }));
            Assert.Equal(HttpStatusCode.Accepted, cancelled.StatusCode);
            Assert.Equal($"{PathBase}/orders/{cancelledId}", cancelled.Headers.Location!.OriginalString);
        }
        finally
        {
            hold.Release();
        }

        using var confirmed = await PlaceAsync(correlationId: null);
        var confirmedId = (await confirmed.Content.ReadFromJsonAsync<PlaceOrderResponse>())!.OrderId;
        await _service.WaitForFinalStateAsync(cancelledId);
        await _service.WaitForFinalStateAsync(confirmedId);

        // One order a page: the first page links to the second under the path base, which the client follows as given.
        var seen = new List<string>();
        string? next = $"{PathBase}/orders?customerId=ada&pageSize=1";
        while (next is not null)
        {
            var page = (await _service.Http.GetFromJsonAsync<OrderPage>(next))!;
            seen.AddRange(page.Items.Select(o => o.Id));
            next = page.Next;
            Assert.True(next is null || next.StartsWith(PathBase + "/orders?", StringComparison.Ordinal), $"next page link {next}");
        }

        Assert.Equal(new[] { cancelledId.ToString(), confirmedId.ToString() }.Order(), seen.Order());
    }

    private async Task<HttpResponseMessage> PlaceAsync(string? correlationId)
    {
        using var request = new HttpRequestMessage(HttpMethod.Post, $"{PathBase}/orders")
        {
            Content = JsonContent.Create(new { customerId = "ada", lines = new[] { new { sku = "cable", quantity = 1 } } }),
        };
        if (correlationId is not null)
        {
            request.Headers.Add("X-Correlation-Id", correlationId);
        }

        var response = await _service.Http.SendAsync(request);
        Assert.Equal(HttpStatusCode.Accepted, response.StatusCode);
        return response;
    }
}
