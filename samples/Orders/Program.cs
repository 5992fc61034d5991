using Herald.Cqrs;
using Herald.Cqrs.Validation;
using Herald.EventSourcing;
using Herald.Reliability.DeadLetters;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Orders;
using Orders.Domain;

// The order service: command -> Order aggregate -> event store -> published to the bus -> projection + fulfillment.
// Everything runs in this one process; later issues put SQLite, HTTP and the sagas in front.
var builder = Host.CreateApplicationBuilder(args);
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

using var host = builder.Build();
await host.StartAsync();
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
var events = 0;
await foreach (var _ in store.ReadAllAsync())
{
    events++;
}

Console.WriteLine();
Console.WriteLine("order                                 customer    total  status     detail");
foreach (var id in placed)
{
    var summary = (await queries.QueryAsync(new GetOrderSummary(id)))!;
    Console.WriteLine($"{summary.OrderId}  {summary.CustomerId,-8} {summary.Total,8:0.00}  {summary.Status,-9}  {summary.Detail}");
}

var deadLetters = await host.Services.GetRequiredService<IDeadLetterStore>().CountAsync(new DeadLetterQuery());
Console.WriteLine($"{events} events in the store, {deadLetters} dead letters");
await host.StopAsync();
