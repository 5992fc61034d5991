using Herald.Cqrs;
using Herald.Cqrs.Validation;
using Herald.EventSourcing;
using Herald.EventSourcing.Aggregates;
using Herald.Reliability.DeadLetters;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Orders;
using Orders.Domain;

// The order service: command -> Order aggregate -> event store -> published to the bus -> projection + fulfillment.
// Profiles (Herald:Profile, e.g. `--Herald:Profile distributed`):
//   embedded (default)  events, dead letters, outbox and a durable queue in one SQLite file (Herald:Sqlite, default orders.db)
//   distributed         the same SQLite store, messages over RabbitMQ (Herald:RabbitMq, required: amqp://user:password@host:5672/)
var builder = Host.CreateApplicationBuilder(args);
var profile = builder.Configuration["Herald:Profile"] ?? "embedded";
var sqlitePath = builder.Configuration["Herald:Sqlite"] ?? "orders.db";
builder.Logging.ClearProviders().AddSimpleConsole(o =>
{
    o.SingleLine = true;
    o.TimestampFormat = "HH:mm:ss.fff ";
});
builder.Logging.AddFilter("Microsoft", LogLevel.Warning);
builder.Services.AddSingleton<OrderSummaries>();
builder.Services.AddHerald(h => h
    .AddHandlersFromAssembly(typeof(PlaceOrder).Assembly)
    .AddAggregate<Order>()
    .PublishStoredEvents()
    .Configure(o => o.EndpointName = "orders")
    .ConfigureRetries(r => r.Immediate(1).Delayed(3, TimeSpan.FromMilliseconds(100), TimeSpan.FromSeconds(1))));
builder.Services.AddHerald(h =>
{
    h.UseSqlite(sqlitePath);
    switch (profile)
    {
        case "embedded":
            h.UseSqliteQueue(sqlitePath);
            break;
        case "distributed":
            h.UseRabbitMq(o => o.ConnectionUri = new Uri(builder.Configuration["Herald:RabbitMq"]
                ?? throw new InvalidOperationException("The distributed profile needs Herald:RabbitMq, the broker URI with its user and password.")));
            break;
        default:
            throw new InvalidOperationException($"Unknown profile '{profile}': use 'embedded' or 'distributed'.");
    }
});

using var host = builder.Build();
await host.StartAsync();
Console.WriteLine($"profile {profile}: events in {Path.GetFullPath(sqlitePath)}");
var commands = host.Services.GetRequiredService<ICommandBus>();
var queries = host.Services.GetRequiredService<IQueryBus>();

var placed = new List<Guid>
{
    await commands.SendAsync(new PlaceOrder("ada", [new OrderLine("keyboard", 1, 49.90m)])),
    await commands.SendAsync(new PlaceOrder("grace", [new OrderLine("monitor", 2, 189.00m), new OrderLine("cable", 2, 4.50m)])),
    await commands.SendAsync(new PlaceOrder("linus", [new OrderLine("cable", 12, 4.50m)])),
    await commands.SendAsync(new PlaceOrder("alan", [new OrderLine("unobtainium", 1, 999.00m)])),
};

try
{
    await commands.SendAsync(new PlaceOrder("", [new OrderLine("mouse", 0, 19.90m)]));
}
catch (ValidationException ex)
{
    Console.WriteLine($"rejected: {ex.Message}");
}

// Wait (with a deadline) until every order has reached the end of its life in the read model.
using var deadline = new CancellationTokenSource(TimeSpan.FromSeconds(30));
async Task<bool> AllDoneAsync()
{
    foreach (var id in placed)
    {
        if ((await queries.QueryAsync(new GetOrderSummary(id)))?.Status is not ("delivered" or "cancelled"))
        {
            return false;
        }
    }

    return true;
}

while (!await AllDoneAsync())
{
    await Task.Delay(TimeSpan.FromMilliseconds(20), deadline.Token);
}

try
{
    await commands.SendAsync(new CancelOrder(placed[0], "changed my mind"));
}
catch (OrderRuleException ex)
{
    Console.WriteLine($"rejected: {ex.Message}");
}

var store = host.Services.GetRequiredService<IEventStore>();
await using var scope = host.Services.CreateAsyncScope();
var orders = scope.ServiceProvider.GetRequiredService<AggregateRepository<Order>>();
var events = 0L;
foreach (var id in placed)
{
    events += await store.GetStreamVersionAsync(orders.StreamNameFor(id.ToString()));
}

Console.WriteLine();
Console.WriteLine("order                                 customer    total  status     detail");
foreach (var id in placed)
{
    var summary = (await queries.QueryAsync(new GetOrderSummary(id)))!;
    Console.WriteLine($"{summary.OrderId}  {summary.CustomerId,-8} {summary.Total,8:0.00}  {summary.Status,-9}  {summary.Detail}");
}

var deadLetters = await host.Services.GetRequiredService<IDeadLetterStore>().CountAsync(new DeadLetterQuery());
Console.WriteLine($"{events} events stored for these orders, {deadLetters} dead letters");
await host.StopAsync();
