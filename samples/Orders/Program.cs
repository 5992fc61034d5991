using Herald.Cqrs;
using Herald.Cqrs.Validation;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Orders;

// The order service, embedded: commands through the command bus, events over the in-process transport to the
// projection and the fulfillment flow. Later issues put the event store, the SQLite queue and HTTP in front.
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
    .Configure(o => o.EndpointName = "orders")
    .ConfigureRetries(r => r.Immediate(0).Delayed(3, TimeSpan.FromMilliseconds(100), TimeSpan.FromSeconds(1))));

using var host = builder.Build();
await host.StartAsync();
var commands = host.Services.GetRequiredService<ICommandBus>();
var queries = host.Services.GetRequiredService<IQueryBus>();
var summaries = host.Services.GetRequiredService<OrderSummaries>();

var placed = new List<Guid>
{
    await commands.SendAsync(new PlaceOrder("ada", "keyboard", 1, 49.90m)),
    await commands.SendAsync(new PlaceOrder("grace", "monitor", 2, 189.00m)),
    await commands.SendAsync(new PlaceOrder("linus", "cable", 12, 4.50m)),
};

try
{
    await commands.SendAsync(new PlaceOrder("", "mouse", 0, 19.90m));
}
catch (ValidationException ex)
{
    Console.WriteLine($"rejected: {ex.Message}");
}

// Wait (with a deadline) until the projection shows every order confirmed.
using var deadline = new CancellationTokenSource(TimeSpan.FromSeconds(30));
while (summaries.All.Count(s => s.Status == "confirmed") < placed.Count)
{
    await Task.Delay(TimeSpan.FromMilliseconds(20), deadline.Token);
}

Console.WriteLine();
Console.WriteLine("order                                 customer  total     status");
foreach (var id in placed)
{
    var summary = await queries.QueryAsync(new GetOrderSummary(id));
    Console.WriteLine($"{summary!.OrderId}  {summary.CustomerId,-8}  {summary.Total,8:0.00}  {summary.Status}");
}

await host.StopAsync();
