using Orders;
using Orders.Demo;

// The order service: POST /orders -> command bus -> Order aggregate -> event store -> published to the bus ->
// fulfilment saga (reserve stock, charge payment, ship; compensated when a step fails) + the read-model projection.
//   dotnet run --project samples/Orders                          embedded profile (one SQLite file), http://127.0.0.1:5080
//   dotnet run --project samples/Orders -- --demo 200            places 200 orders over HTTP and prints a summary
//   HERALD__PROFILE=distributed HERALD__POSTGRES=... HERALD__RABBITMQ=amqp://user:password@127.0.0.1:5672/ dotnet run --project samples/Orders
await using var app = OrderServiceApp.Build(args);
if (app.Configuration["demo"] is { } demo)
{
    return await DemoRunner.RunAsync(app, demo);
}

await app.StartAsync();
Banner.Print(app);
await app.WaitForShutdownAsync();
return 0;

/// <summary>The entry point, public so tests can name the assembly's program.</summary>
public partial class Program;
