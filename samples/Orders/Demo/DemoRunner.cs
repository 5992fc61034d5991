using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using System.Net;
using System.Net.Http.Json;
using Herald.Reliability.DeadLetters;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.DependencyInjection;
using Orders.Api;
using Orders.Fulfilment;
using Orders.ReadModel;
using Spectre.Console;

namespace Orders.Demo;

/// <summary>
/// <c>--demo N</c>: starts the service, places N orders over its own HTTP endpoint from a few concurrent clients (some
/// whose payment is declined, a few invalid), follows each accepted order to its final state in the read model, and prints
/// a summary. Exits 0 when every accepted order reached a final state before the deadline.
/// </summary>
public static class DemoRunner
{
    private const int Clients = 8;

    public static async Task<int> RunAsync(WebApplication app, string countText)
    {
        if (!int.TryParse(countText, CultureInfo.InvariantCulture, out var count) || count is < 1 or > 100_000)
        {
            await Console.Error.WriteLineAsync($"--demo takes a number of orders between 1 and 100000, not '{countText}'.");
            return 2;
        }

        await app.StartAsync();
        var url = Banner.Address(app);
        var settings = app.Services.GetRequiredService<OrderServiceSettings>();
        AnsiConsole.MarkupLine($"[bold]Herald order service demo[/]: {count} orders, {Clients} clients, profile [green]{settings.Profile}[/], {url}");
        using var http = new HttpClient { BaseAddress = new Uri(url), Timeout = TimeSpan.FromSeconds(30) };
        var plan = Plan(count);
        var run = new DemoRun(plan.Count);
        var clock = Stopwatch.StartNew();
        var deadline = TimeSpan.FromSeconds(60 + (count / 10));

        using var stop = new CancellationTokenSource(deadline);
        var placing = PlaceAllAsync(http, plan, run, stop.Token);
        var following = FollowAsync(http, run, placing, stop.Token);
        await ShowProgressAsync(run, Task.WhenAll(placing, following));
        var elapsed = clock.Elapsed;

        var deadLetters = await app.Services.GetRequiredService<IDeadLetterStore>().CountAsync(DeadLetterQuery.All);
        var ledger = await app.Services.GetRequiredService<Ledger>().CountAsync(null, CancellationToken.None);
        PrintSummary(run, elapsed, deadLetters, ledger);
        await app.StopAsync();
        return run.Pending.IsEmpty ? 0 : 1;
    }

    // A fixed mix (seeded, so every run places the same orders): about 1 in 10 by the customer whose card is declined,
    // 1 in 20 above the payment limit, 1 in 25 invalid (an unknown product or a zero quantity), the rest fine.
    private static List<PlannedOrder> Plan(int count)
    {
        var random = new Random(12);
        string[] good = ["ada", "grace", "linus", "alan"];
        string[] skus = ["keyboard", "mouse", "monitor", "cable"];
        var orders = new List<PlannedOrder>(count);
        for (var i = 0; i < count; i++)
        {
            var roll = random.Next(100);
            var customer = roll < 10 ? Domain.Catalog.BadCardCustomer : good[random.Next(good.Length)];
            // Each product once: the service refuses an order that repeats one (its per-line limit would not hold).
            var lines = skus.OrderBy(_ => random.Next()).Take(1 + random.Next(3))
                .Select(sku => new OrderLineRequest(sku, 1 + random.Next(3)))
                .ToList();
            if (roll is >= 10 and < 15)
            {
                lines.Add(new OrderLineRequest("laptop", 1));
            }
            else if (roll is >= 15 and < 17)
            {
                lines.Add(new OrderLineRequest("unobtainium", 1));
            }
            else if (roll is >= 17 and < 19)
            {
                lines[0] = lines[0] with { Quantity = 0 };
            }

            orders.Add(new PlannedOrder(i, new PlaceOrderRequest(customer, lines)));
        }

        return orders;
    }

    private static async Task PlaceAllAsync(HttpClient http, List<PlannedOrder> plan, DemoRun run, CancellationToken cancellationToken) =>
        await Parallel.ForEachAsync(plan, new ParallelOptions { MaxDegreeOfParallelism = Clients, CancellationToken = cancellationToken }, async (order, token) =>
        {
            using var request = new HttpRequestMessage(HttpMethod.Post, "/orders") { Content = JsonContent.Create(order.Request) };
            request.Headers.Add("Idempotency-Key", $"demo-{run.Id}-{order.Number}");
            request.Headers.Add("X-Correlation-Id", $"demo-{run.Id}-{order.Number}");
            var started = Stopwatch.GetTimestamp();
            try
            {
                using var response = await http.SendAsync(request, token);
                switch (response.StatusCode)
                {
                    case HttpStatusCode.Accepted:
                        var accepted = await response.Content.ReadFromJsonAsync<PlaceOrderResponse>(token);
                        run.Pending[accepted!.OrderId] = started;
                        Interlocked.Increment(ref run.Accepted);
                        break;
                    case HttpStatusCode.BadRequest:
                        Interlocked.Increment(ref run.Rejected);
                        break;
                    default:
                        Interlocked.Increment(ref run.Failed);
                        break;
                }
            }
            catch (HttpRequestException)
            {
                Interlocked.Increment(ref run.Failed);
            }

            Interlocked.Increment(ref run.Posted);
        });

    // Polls the read model for every accepted order until it is Confirmed or Cancelled (or the deadline passes).
    private static async Task FollowAsync(HttpClient http, DemoRun run, Task placing, CancellationToken cancellationToken)
    {
        try
        {
            while (!placing.IsCompleted || !run.Pending.IsEmpty)
            {
                await Parallel.ForEachAsync(run.Pending.Keys.ToList(), new ParallelOptions { MaxDegreeOfParallelism = Clients, CancellationToken = cancellationToken }, async (id, token) =>
                {
                    // Not final yet (or, the read model far behind, 503): polled again.
                    using var response = await http.GetAsync($"/orders/{id}", token).ConfigureAwait(false);
                    var order = response.IsSuccessStatusCode ? await response.Content.ReadFromJsonAsync<OrderView>(token).ConfigureAwait(false) : null;
                    if (order is not null && OrderStates.IsFinal(order.Status) && run.Pending.TryRemove(id, out var started))
                    {
                        run.LatenciesMs.Add(Stopwatch.GetElapsedTime(started).TotalMilliseconds);
                        if (order.Status == OrderStates.Confirmed)
                        {
                            Interlocked.Increment(ref run.Confirmed);
                        }
                        else if (order.CancelledByCompensation)
                        {
                            Interlocked.Increment(ref run.Compensated);
                        }
                        else
                        {
                            Interlocked.Increment(ref run.CancelledOther);
                        }
                    }
                }).ConfigureAwait(false);
                await Task.Delay(TimeSpan.FromMilliseconds(25), cancellationToken).ConfigureAwait(false);
            }
        }
        catch (HttpRequestException) when (cancellationToken.IsCancellationRequested)
        {
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            // The deadline passed: what is still pending is reported as not finished.
        }
    }

    private static async Task ShowProgressAsync(DemoRun run, Task work)
    {
        if (!AnsiConsole.Profile.Capabilities.Interactive)
        {
            // Redirected output: a line every second instead of a live bar.
            while (!work.IsCompleted)
            {
                await Task.WhenAny(work, Task.Delay(TimeSpan.FromSeconds(1)));
                Console.WriteLine($"posted {run.Posted}/{run.Total}, final {run.Confirmed + run.Compensated + run.CancelledOther}/{run.Accepted}");
            }

            await work;
            return;
        }

        await AnsiConsole.Progress()
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new ElapsedTimeColumn())
            .StartAsync(async context =>
            {
                var posted = context.AddTask("POST /orders", maxValue: run.Total);
                var final = context.AddTask("final state", maxValue: run.Total);
                while (!work.IsCompleted)
                {
                    await Task.WhenAny(work, Task.Delay(TimeSpan.FromMilliseconds(100)));
                    posted.Value = run.Posted;
                    final.MaxValue = Math.Max(1, run.Posted == run.Total ? run.Accepted : run.Total);
                    final.Value = run.Confirmed + run.Compensated + run.CancelledOther;
                }

                await work;
                posted.Value = run.Posted;
                final.Value = final.MaxValue;
            });
    }

    private static void PrintSummary(DemoRun run, TimeSpan elapsed, long deadLetters, LedgerCounts ledger)
    {
        var latencies = run.LatenciesMs.Order().ToArray();
        var table = new Table().Title("[bold]Summary[/]").AddColumn("outcome").AddColumn(new TableColumn("count").RightAligned());
        table.AddRow("accepted (202)", run.Accepted.ToString(CultureInfo.InvariantCulture));
        table.AddRow("[green]confirmed[/]", run.Confirmed.ToString(CultureInfo.InvariantCulture));
        table.AddRow("[yellow]cancelled by compensation[/] (payment declined)", run.Compensated.ToString(CultureInfo.InvariantCulture));
        table.AddRow("cancelled otherwise", run.CancelledOther.ToString(CultureInfo.InvariantCulture));
        table.AddRow("[red]failed[/] (no answer, 5xx, or not final by the deadline)", (run.Failed + run.Pending.Count).ToString(CultureInfo.InvariantCulture));
        table.AddRow("rejected (400, as planned)", run.Rejected.ToString(CultureInfo.InvariantCulture));
        table.AddRow("dead letters", deadLetters.ToString(CultureInfo.InvariantCulture));
        table.AddRow("payments charged / refunded", $"{ledger.Payments} / {ledger.Refunded}");
        table.AddRow("stock reservations / released", $"{ledger.Reservations} / {ledger.Released}");
        table.AddRow("p50 POST -> final (ms)", Percentile(latencies, 0.50));
        table.AddRow("p99 POST -> final (ms)", Percentile(latencies, 0.99));
        table.AddRow("elapsed (s)", elapsed.TotalSeconds.ToString("0.0", CultureInfo.InvariantCulture));
        AnsiConsole.Write(table);
        AnsiConsole.MarkupLine(run.Pending.IsEmpty
            ? "[green]Every accepted order reached a final state.[/]"
            : $"[red]{run.Pending.Count} accepted order(s) did not reach a final state in time.[/]");
        AnsiConsole.MarkupLine("(The payment, stock and dead-letter counts cover the whole database, earlier runs included.)");
    }

    private static string Percentile(double[] sorted, double p) =>
        sorted.Length == 0 ? "-" : sorted[Math.Clamp((int)Math.Ceiling(p * sorted.Length) - 1, 0, sorted.Length - 1)].ToString("0", CultureInfo.InvariantCulture);

    private sealed record PlannedOrder(int Number, PlaceOrderRequest Request);

    private sealed class DemoRun(int total)
    {
        public readonly string Id = Guid.NewGuid().ToString("N")[..8];
        public readonly int Total = total;
        public readonly ConcurrentDictionary<Guid, long> Pending = new();
        public readonly ConcurrentBag<double> LatenciesMs = [];
        public int Posted;
        public int Accepted;
        public int Rejected;
        public int Failed;
        public int Confirmed;
        public int Compensated;
        public int CancelledOther;
    }
}
