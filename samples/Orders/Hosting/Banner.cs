using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Extensions.DependencyInjection;

namespace Orders;

/// <summary>What the service prints when it is up: where it listens, on which stores, and what to try.</summary>
public static class Banner
{
    public static string Address(WebApplication app) =>
        app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()?.Addresses.FirstOrDefault() ?? OrderServiceApp.DefaultUrl;

    public static void Print(WebApplication app)
    {
        var settings = app.Services.GetRequiredService<OrderServiceSettings>();
        var url = Address(app);
        var where = settings.Profile == OrderServiceSettings.Embedded
            ? $"embedded: events, read model, saga, queue and the services' tables in {Path.GetFullPath(settings.SqlitePath)}"
            : $"distributed: PostgreSQL schema '{settings.Schema}', RabbitMQ queue '{settings.Endpoint}'" + (settings.Redis is null ? string.Empty : ", idempotency keys in Redis");
        Console.WriteLine($$"""

            The order service listens on {{url}} ({{where}}).
            Try:
              curl -si -X POST {{url}}/orders -H 'Content-Type: application/json' -H 'Idempotency-Key: first-order' -H 'X-Correlation-Id: demo-1' -d '{"customerId":"ada","lines":[{"sku":"keyboard","quantity":1},{"sku":"cable","quantity":2}]}'
              curl -s {{url}}/orders/<id from Location>                 # Placed, then Confirmed once the saga reserved, charged and shipped
              curl -s {{url}}/orders/<id>/history                       # every event with its version, position, correlation and causation ids
              curl -si -X POST {{url}}/orders -H 'Content-Type: application/json' -d '{"customerId":"bad-card","lines":[{"sku":"mouse","quantity":1}]}'   # payment declined: compensated to Cancelled
              curl -si -X POST {{url}}/orders -H 'Content-Type: application/json' -d '{"customerId":"","lines":[{"sku":"nope","quantity":0}]}'          # 400 listing every error
              curl -s '{{url}}/orders?status=Confirmed&pageSize=10'
              curl -s '{{url}}/stats/orders-per-status?from=2026-01-01T00:00:00Z'   # order events per status per minute, from a stream's state
              curl -s {{url}}/health
            Customers: ada, grace, linus, alan, bad-card. Products: keyboard, mouse, monitor, cable, laptop (orders above 1000.00 are declined).
            Ctrl+C stops it; `dotnet run --project samples/Orders -- --demo 200` places 200 orders and prints a summary.

            """);
    }
}
