using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Http.Json;
using Herald.Benchmarks.EventStore;
using Herald.Benchmarks.Harness;
using Herald.Projections;
using Herald.Reliability.DeadLetters;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting.Server;
using Microsoft.AspNetCore.Hosting.Server.Features;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Orders;
using Orders.Api;
using Orders.Fulfilment;
using Orders.ReadModel;

namespace Herald.Benchmarks.Orders;

/// <summary>
/// The order service under load (issue 12): the sample itself (samples/Orders) started in this process on 127.0.0.1, N
/// orders POSTed by M concurrent HTTP clients, each followed to its final state (Confirmed, or Cancelled by the saga's
/// compensation) in the read model. Reports orders/s accepted and p50/p99 from POST to final state, for both profiles.
/// </summary>
internal sealed class OrdersBenchmark : IBenchmark
{
    private static readonly TimeSpan Deadline = TimeSpan.FromMinutes(5);

    public string Name => "orders";

    public string Description => "order service over HTTP: orders/s accepted, p50/p99 POST to final state; embedded (SQLite) and distributed (PostgreSQL + RabbitMQ)";

    public async Task RunAsync(BenchmarkArgs args, CancellationToken cancellationToken)
    {
        var repeat = args.Repeat ?? (args.Quick ? 1 : 3);
        var (orders, clients) = args.Quick ? (100, 8) : (1_000, 16);
        var postgres = Environment.GetEnvironmentVariable("HERALD_BENCH_POSTGRES") is { Length: > 0 } cs
            ? cs
            : "Host=127.0.0.1;Port=5432;Username=herald;Password=herald;Database=herald";
        var rabbit = Environment.GetEnvironmentVariable("HERALD_BENCH_RABBITMQ") is { Length: > 0 } uri ? uri : "amqp://guest:guest@127.0.0.1:5672/";
        Console.WriteLine($"orders: {(args.Quick ? "quick" : "full")} run, {repeat} round(s) of {orders} orders from {clients} clients per profile");

        var profiles = new (string Name, string Setup, Func<string, string[]> Args)[]
        {
            ("embedded", "SQLite for every store and the SQLite queue, one file in the temp directory", run =>
                ["--Herald:Profile", "embedded", "--Herald:Sqlite", Path.Combine(Path.GetTempPath(), $"herald-bench-orders-{run}.db")]),
            ("distributed", $"PostgreSQL for every store (a fresh schema), RabbitMQ for messages ({EventStoreBenchmark.Redact(rabbit)})", run =>
                ["--Herald:Profile", "distributed", "--Herald:Postgres", postgres, "--Herald:Schema", $"bench_orders_{run}", "--Herald:RabbitMq", rabbit, "--Herald:Endpoint", $"bench-orders-{run}"]),
        };

        var results = new List<(string Profile, string Setup, List<Round> Rounds)>();
        foreach (var profile in profiles.Where(p => args.Includes(p.Name)))
        {
            var rounds = new List<Round>();
            for (var round = 0; round <= repeat; round++)
            {
                // Round 0 warms the code up (a fresh service, a few orders) and is not reported.
                var run = Guid.NewGuid().ToString("N")[..10];
                var measured = await RunOnceAsync(profile.Args(run), round == 0 ? Math.Min(orders, 100) : orders, clients, cancellationToken);
                await CleanUpAsync(profile.Name, run, postgres);
                if (round == 0)
                {
                    continue;
                }

                rounds.Add(measured);
                Console.WriteLine($"  {profile.Name} round {round}: {measured.AcceptedPerSecond:N0} accepted/s, final p50 {measured.P50:N0} ms p99 {measured.P99:N0} ms, {measured.Confirmed} confirmed {measured.Cancelled} cancelled, {measured.DeadLetters} dead letters");
            }

            results.Add((profile.Name, profile.Setup, rounds));
        }

        var server = await EventStoreBenchmark.DescribeServerAsync(postgres, cancellationToken);
        ResultsFile.Publish(args, Name, Render(args, orders, clients, repeat, server, results));
    }

    private sealed record Round(int Accepted, double AcceptedPerSecond, double P50, double P99, int Confirmed, int Cancelled, long DeadLetters, long PaymentRepeats, double CpuSeconds);

    private static async Task<Round> RunOnceAsync(string[] profileArgs, int orders, int clients, CancellationToken cancellationToken)
    {
        await using var app = OrderServiceApp.Build(
            [.. profileArgs, "--urls", "http://127.0.0.1:0"],
            b =>
            {
                b.Logging.AddFilter("Orders", LogLevel.Warning);
                b.Logging.AddFilter("Herald", LogLevel.Error);
            });
        await app.StartAsync(cancellationToken);
        var address = app.Services.GetRequiredService<IServer>().Features.Get<IServerAddressesFeature>()!.Addresses.First();
        using var http = new HttpClient { BaseAddress = new Uri(address), Timeout = TimeSpan.FromSeconds(60) };
        await WaitForCatalogAsync(http, cancellationToken);

        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        deadline.CancelAfter(Deadline);
        var pending = new ConcurrentDictionary<Guid, long>();
        var latencies = new ConcurrentBag<double>();
        var statuses = new ConcurrentDictionary<Guid, string>();
        var cpu = Process.GetCurrentProcess().TotalProcessorTime;
        var started = Stopwatch.GetTimestamp();
        var placing = PlaceAsync(http, orders, clients, pending, deadline.Token);
        var following = FollowAsync(app.Services.GetRequiredService<ReadModels>(), placing, pending, latencies, statuses, deadline.Token);
        var accepted = await placing;
        var placed = Stopwatch.GetElapsedTime(started);
        await following;
        var cpuSeconds = (Process.GetCurrentProcess().TotalProcessorTime - cpu).TotalSeconds;

        var deadLetters = await app.Services.GetRequiredService<IDeadLetterStore>().CountAsync(DeadLetterQuery.All, cancellationToken);
        var ledger = await app.Services.GetRequiredService<Ledger>().CountAsync(null, cancellationToken);
        await app.StopAsync(CancellationToken.None);
        if (accepted != orders || statuses.Count != orders)
        {
            throw new InvalidOperationException($"{accepted} of {orders} orders accepted and {statuses.Count} reached a final state: the run is not valid.");
        }

        var sorted = latencies.Order().ToArray();
        return new Round(
            accepted,
            accepted / placed.TotalSeconds,
            Percentile(sorted, 0.50),
            Percentile(sorted, 0.99),
            statuses.Values.Count(s => s == OrderStates.Confirmed),
            statuses.Values.Count(s => s == OrderStates.Cancelled),
            deadLetters,
            ledger.PaymentRepeats,
            cpuSeconds);
    }

    // The catalog is seeded into the read model in the background at start; an order placed before it would be refused.
    private static async Task WaitForCatalogAsync(HttpClient http, CancellationToken cancellationToken)
    {
        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        deadline.CancelAfter(TimeSpan.FromSeconds(60));
        while (true)
        {
            using var response = await http.GetAsync("/health", deadline.Token);
            if (response.StatusCode == HttpStatusCode.OK)
            {
                return;
            }

            await Task.Delay(50, deadline.Token);
        }
    }

    // Every order is valid; one in ten is by the customer whose card is declined, so its saga compensates to Cancelled.
    private static async Task<int> PlaceAsync(HttpClient http, int orders, int clients, ConcurrentDictionary<Guid, long> pending, CancellationToken cancellationToken)
    {
        var accepted = 0;
        string[] customers = ["ada", "grace", "linus", "alan"];
        string[] skus = ["keyboard", "mouse", "monitor", "cable"];
        await Parallel.ForEachAsync(Enumerable.Range(0, orders), new ParallelOptions { MaxDegreeOfParallelism = clients, CancellationToken = cancellationToken }, async (i, token) =>
        {
            var customer = i % 10 == 9 ? "bad-card" : customers[i % customers.Length];
            var request = new PlaceOrderRequest(customer, [new OrderLineRequest(skus[i % skus.Length], 1 + (i % 3)), new OrderLineRequest("cable", 1)]);
            var posted = Stopwatch.GetTimestamp();
            using var response = await http.PostAsJsonAsync("/orders", request, token);
            if (response.StatusCode != HttpStatusCode.Accepted)
            {
                throw new InvalidOperationException($"POST /orders answered {(int)response.StatusCode}: {await response.Content.ReadAsStringAsync(token)}");
            }

            var body = await response.Content.ReadFromJsonAsync<PlaceOrderResponse>(token);
            pending[body!.OrderId] = posted;
            Interlocked.Increment(ref accepted);
        });
        return accepted;
    }

    // Reads the pending orders from the read model in this process (not over HTTP, so following does not load the
    // service's endpoint); a final state's time is when a pass first saw it, so latencies are rounded up to a pass.
    private static async Task FollowAsync(
        ReadModels readModels,
        Task placing,
        ConcurrentDictionary<Guid, long> pending,
        ConcurrentBag<double> latencies,
        ConcurrentDictionary<Guid, string> statuses,
        CancellationToken cancellationToken)
    {
        while (!placing.IsCompleted || !pending.IsEmpty)
        {
            foreach (var (id, posted) in pending)
            {
                var view = await readModels.GetAsync(OrderProjection.Orders, id.ToString(), cancellationToken);
                if (OrderStates.IsFinal(view?.Status))
                {
                    latencies.Add(Stopwatch.GetElapsedTime(posted).TotalMilliseconds);
                    statuses[id] = view!.Status;
                    pending.TryRemove(id, out _);
                }
            }

            await Task.Delay(5, cancellationToken);
        }

        if (placing.IsFaulted)
        {
            await placing;
        }
    }

    private static async Task CleanUpAsync(string profile, string run, string postgres)
    {
        if (profile == "embedded")
        {
            foreach (var file in Directory.EnumerateFiles(Path.GetTempPath(), $"herald-bench-orders-{run}.db*"))
            {
                File.Delete(file);
            }

            return;
        }

        await using var connection = new Npgsql.NpgsqlConnection(postgres);
        await connection.OpenAsync();
        await using var drop = new Npgsql.NpgsqlCommand($"DROP SCHEMA IF EXISTS bench_orders_{run} CASCADE", connection);
        await drop.ExecuteNonQueryAsync();
    }

    private static double Percentile(double[] sorted, double p) =>
        sorted.Length == 0 ? double.NaN : sorted[Math.Clamp((int)Math.Ceiling(p * sorted.Length) - 1, 0, sorted.Length - 1)];

    private static string Render(BenchmarkArgs args, int orders, int clients, int repeat, string server, List<(string Profile, string Setup, List<Round> Rounds)> results)
    {
        var text = ResultsFile.Open(args, "orders", "The order service under load", ("Servers", $"{server}; RabbitMQ and the service on 127.0.0.1"));
        text.AppendLine();
        text.AppendLine(CultureInfo.InvariantCulture, $"The work: the sample order service (samples/Orders, as `dotnet run` starts it, in this process on a free 127.0.0.1 port) receives {orders} orders as `POST /orders` from {clients} concurrent HTTP clients (each awaiting its answer before the next). Every order is valid; one in ten is by the customer whose card is declined, so its fulfilment saga reserves stock, fails the payment and compensates to Cancelled; the others are reserved, charged, shipped and Confirmed. Each POST runs `PlaceOrder` through the command bus in one unit of work (the aggregate's events stored, the read model and the saga fed from them).");
        text.AppendLine("\"accepted/s\" is orders answered 202 ÷ the time from the first POST to the last answer. \"POST → final\" is from sending the POST until the order's row in the read model shows Confirmed or Cancelled; a follower in the process reads the pending rows in passes, so each latency is rounded up to the end of a pass. A round starts a fresh service with an empty store (a warm-up round of 100 orders is not reported); medians of the rounds are shown, then every round.");
        text.AppendLine("After every round the run is checked, not timed: every order accepted and final, and the ledger's repeated charges and dead letters reported (both should be 0).");
        text.AppendLine();
        var table = new MarkdownTable("Profile", "orders", "accepted/s (median)", "POST → final p50 ms", "p99 ms", "confirmed / cancelled", "dead letters", "repeated charges", "CPU s (process)");
        foreach (var (profile, _, rounds) in results)
        {
            if (rounds.Count == 0)
            {
                continue;
            }

            table.Add(
                profile,
                F(rounds[0].Accepted),
                F(Median(rounds.Select(r => r.AcceptedPerSecond))),
                F(Median(rounds.Select(r => r.P50))),
                F(Median(rounds.Select(r => r.P99))),
                $"{rounds[0].Confirmed} / {rounds[0].Cancelled}",
                string.Join(" ", rounds.Select(r => r.DeadLetters)),
                string.Join(" ", rounds.Select(r => r.PaymentRepeats)),
                Median(rounds.Select(r => r.CpuSeconds)).ToString("0.0", CultureInfo.InvariantCulture));
        }

        text.Append(table);
        text.AppendLine();
        text.AppendLine("Every round:");
        text.AppendLine();
        var every = new MarkdownTable("Profile", "round", "accepted/s", "p50 ms", "p99 ms");
        foreach (var (profile, _, rounds) in results)
        {
            for (var i = 0; i < rounds.Count; i++)
            {
                every.Add(profile, (i + 1).ToString(CultureInfo.InvariantCulture), F(rounds[i].AcceptedPerSecond), F(rounds[i].P50), F(rounds[i].P99));
            }
        }

        text.Append(every);
        text.AppendLine();
        text.AppendLine(CultureInfo.InvariantCulture, $"Issue 12 asks for these figures for both profiles and sets no target; there is no other order service to put beside them. {repeat} round(s) per profile.");
        text.AppendLine();
        foreach (var (profile, setup, _) in results)
        {
            text.AppendLine(CultureInfo.InvariantCulture, $"- **{profile}**: {setup}");
        }

        return text.ToString();
    }

    private static double Median(IEnumerable<double> values)
    {
        var sorted = values.Order().ToArray();
        return sorted.Length == 0 ? double.NaN : sorted[sorted.Length / 2];
    }

    private static string F(double value) => value.ToString("N0", CultureInfo.InvariantCulture);
}
