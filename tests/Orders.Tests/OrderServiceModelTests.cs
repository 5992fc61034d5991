using System.Collections.Concurrent;
using System.Net;
using System.Net.Http.Json;
using System.Text;
using Herald.EventSourcing;
using Herald.EventSourcing.Aggregates;
using Herald.Projections;
using Herald.Reliability.DeadLetters;
using Herald.Sagas;
using Microsoft.Extensions.DependencyInjection;
using Orders.Api;
using Orders.Domain;
using Orders.Fulfilment;
using Orders.ReadModel;
using Xunit.Abstractions;

namespace Orders.Tests;

/// <summary>
/// A seeded model of the order service run as a child process: random POSTs (valid, invalid, without a key, repeated with
/// their Idempotency-Key, the key reused for another body), GETs, customer cancels, bursts of concurrent requests, and
/// SIGKILLs while requests are in flight, with restarts. Each answer is checked against what the model expects when it
/// comes; at the end every accepted order has one valid stream that ends once as the model says, its fulfilment effects
/// happened once (or were undone), the read model holds those orders and, of the requests a kill cut off and that were
/// never retried, only whole orders, and nothing is dead-lettered. A failure names the seed and the operations.
/// </summary>
public sealed class OrderServiceModelTests(ITestOutputHelper output)
{
    private const int Lives = 4;
    private static readonly TimeSpan SettleDeadline = TimeSpan.FromSeconds(60);

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public async Task Embedded_RandomRequestsKillsAndRestarts_KeepEveryPromiseOfTheModel(int seed)
    {
        var directory = Path.Combine(Path.GetTempPath(), "orders-model-" + Guid.NewGuid().ToString("N")[..12]);
        Directory.CreateDirectory(directory);
        try
        {
            await RunAsync(seed, ["--Herald:Profile", "embedded", "--Herald:Sqlite", Path.Combine(directory, "orders.db")]);
        }
        finally
        {
            Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
            Directory.Delete(directory, recursive: true);
        }
    }

    [Theory]
    [InlineData(4)]
    public async Task Distributed_RandomRequestsKillsAndRestarts_KeepEveryPromiseOfTheModel(int seed)
    {
        var schema = "orders_model_" + Guid.NewGuid().ToString("N")[..12];
        var endpoint = "orders-model-" + Guid.NewGuid().ToString("N")[..12];
        try
        {
            await RunAsync(seed, TestServers.DistributedSettings(schema, endpoint));
        }
        finally
        {
            await TestServers.DropSchemaAsync(schema);
            await TestServers.DeleteQueuesAsync(endpoint);
        }
    }

    private async Task RunAsync(int seed, string[] profile)
    {
        var model = new Model(new Random(seed));
        try
        {
            // The lives before the last run as a child process, killed (SIGKILL) with requests in flight.
            for (var life = 1; life < Lives; life++)
            {
                await using var service = await OrderServiceProcess.StartAsync(profile);
                using var http = new HttpClient { BaseAddress = service.Address, Timeout = TimeSpan.FromSeconds(30) };
                model.Log($"life {life} starts (child process)");
                await RunRoundsAsync(model, http);
                // Killed once a random number of a burst's requests have been answered: the others are in flight (or not
                // yet sent), so the kill lands inside requests, not after them (they take milliseconds, shorter than a timer).
                var inFlight = model.NextBurst(model.Random.Next(4, 10));
                var answeredBeforeKill = model.Random.Next(inFlight.Count - 1);
                var answered = 0;
                var killNow = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
                if (answeredBeforeKill == 0)
                {
                    killNow.TrySetResult();
                }

                var running = Task.WhenAll(inFlight.Select(async o =>
                {
                    await o(http);
                    if (Interlocked.Increment(ref answered) >= answeredBeforeKill)
                    {
                        killNow.TrySetResult();
                    }
                }));
                await killNow.Task;
                model.Log($"kill after {answeredBeforeKill} of {inFlight.Count} answered");
                await service.KillAsync();
                await running;
            }

            // The last life runs in this process, so the check reads the stores of a running service (its sweep resumes
            // what the kills interrupted) and waits for every saga's end.
            await using (var service = await ServiceInstance.StartAsync(profile))
            {
                model.Log($"life {Lives} starts (in process)");
                await RunRoundsAsync(model, service.Http);
                await model.ResolveRetriedUnknownsAsync(service.Http);
                await SettleAsync(model, service);
                await CheckAsync(model, service);
            }
        }
        catch (Exception e)
        {
            output.WriteLine($"seed {seed}; operations:\n{string.Join('\n', model.Operations)}");
            throw new InvalidOperationException($"The model failed with seed {seed} (its operations are in the test output): {e.Message}", e);
        }

        output.WriteLine($"seed {seed}: {model.Summary()}");
    }

    // Rounds of one request, or a burst of them at once (the same key twice among them at times).
    private static async Task RunRoundsAsync(Model model, HttpClient http)
    {
        var rounds = model.Random.Next(25, 50);
        for (var round = 0; round < rounds; round++)
        {
            var burst = model.Random.Next(4) == 0 ? model.Random.Next(2, 6) : 1;
            var operations = model.NextBurst(burst);
            await Task.WhenAll(operations.Select(o => o(http)));
        }
    }

    // Every accepted order reaches a final state, seen through the API; then every order of the read model (those of
    // cut-off requests too) has its fulfilment ended, and the read model has caught up with the log.
    private static async Task SettleAsync(Model model, ServiceInstance service)
    {
        var pending = model.Orders.Values.ToDictionary(o => o.Id);
        var last = "";
        await Eventually.UntilAsync(
            async () =>
            {
                foreach (var order in pending.Values.ToArray())
                {
                    using var response = await service.Http.GetAsync($"/orders/{order.Id}");
                    if (response.StatusCode == HttpStatusCode.OK && await response.Content.ReadFromJsonAsync<OrderView>() is { } view)
                    {
                        last = $"{order.Id} {view.Status}";
                        model.Saw(order, view);
                        if (OrderStates.IsFinal(view.Status))
                        {
                            pending.Remove(order.Id);
                        }
                    }
                }

                return pending.Count == 0;
            },
            () => $"every accepted order reached a final state ({pending.Count} did not, last seen {last})",
            SettleDeadline);

        await CaughtUpAsync(service, model.Orders.Keys);
        var views = await AllOrdersAsync(service);
        foreach (var view in views)
        {
            await service.WaitForFulfilmentToEndAsync(Guid.Parse(view.Id));
        }

        await CaughtUpAsync(service, [.. model.Orders.Keys, .. views.Select(v => Guid.Parse(v.Id))]);
    }

    // Up to the last event of the orders' streams, not GetLastPositionAsync: on PostgreSQL another test's open transaction
    // holds the readable head back, and that returns what is readable after 10 s. Positions follow the appending
    // transactions, so the orders a kill cut off (appended in an earlier life) lie below the last life's events.
    private static async Task CaughtUpAsync(ServiceInstance service, IEnumerable<Guid> orders)
    {
        await using var scope = service.App.Services.CreateAsyncScope();
        var repository = scope.ServiceProvider.GetRequiredService<AggregateRepository<Order>>();
        var head = 0L;
        foreach (var id in orders.Distinct())
        {
            await foreach (var last in service.Events.ReadStreamAsync(repository.StreamNameFor(id.ToString()), ReadDirection.Backward, long.MaxValue, 1))
            {
                head = Math.Max(head, last.Position);
            }
        }

        using var deadline = new CancellationTokenSource(SettleDeadline);
        await service.App.Services.GetRequiredService<ProjectionManager>().WaitForPositionAsync(OrderProjection.ProjectionName, head, deadline.Token);
    }

    private static async Task<List<OrderView>> AllOrdersAsync(ServiceInstance service)
    {
        var readModels = service.App.Services.GetRequiredService<ReadModels>();
        var all = new List<OrderView>();
        string? after = null;
        do
        {
            var page = await readModels.QueryAsync(OrderProjection.Orders, new ReadModelQuery { Limit = 500, AfterId = after });
            all.AddRange(page.Items);
            after = page.NextAfterId;
        }
        while (after is not null);

        return all;
    }

    // Checked through the service's own stores.
    private static async Task CheckAsync(Model model, ServiceInstance service)
    {
        var services = service.App.Services;
        var store = service.Events;
        var ledger = service.Ledger;
        var sagas = services.GetRequiredService<ISagaStore>();
        await using var scope = services.CreateAsyncScope();
        var repository = scope.ServiceProvider.GetRequiredService<AggregateRepository<Order>>();
        var all = await AllOrdersAsync(service);

        // Orders no accepted request names: each must be one a kill cut off and nobody retried, whole (a body sent, ended).
        var maybe = model.NeverRetried.Select(Model.Describe).ToList();
        foreach (var view in all.Where(v => !model.Orders.ContainsKey(Guid.Parse(v.Id))))
        {
            var description = Model.Describe(view.CustomerId, view.Lines.Select(l => ((string?)l.Sku, l.Quantity)));
            Assert.True(maybe.Remove(description), $"order {view.Id} ({description}) is in the read model, but no accepted request placed it and no cut-off one could have");
        }

        foreach (var view in all)
        {
            var id = Guid.Parse(view.Id);
            var events = new List<RecordedEvent>();
            await foreach (var recorded in store.ReadStreamAsync(repository.StreamNameFor(view.Id)))
            {
                events.Add(recorded);
            }

            var history = string.Join(", ", events.Select(e => e.EventType));
            var ending = StreamGrammar.Check([.. events.Select(e => e.EventType)]);
            Assert.True(ending is not null, $"order {id}'s stream is not a valid order's: {history}");
            Assert.True(ending == view.Status, $"order {id} is {view.Status} in the read model, but its stream ends {ending}: {history}");
            Assert.True(
                view.Refunded == events.Any(e => e.EventType == "payment-refunded") && view.StockReleased == events.Any(e => e.EventType == "stock-released"),
                $"order {id}'s read model (refunded {view.Refunded}, released {view.StockReleased}) does not show its stream: {history}");
            if (model.Orders.GetValueOrDefault(id) is { } expected)
            {
                Assert.True(expected.Allows(view.Status), $"order {id} ({expected}) ended {view.Status}: {history}");
                Assert.Equal(Model.Describe(expected.Request), Model.Describe(view.CustomerId, view.Lines.Select(l => ((string?)l.Sku, l.Quantity))));
            }

            // Each effect once, and undone when the order is cancelled (a shipment is never arranged for one).
            var counts = await ledger.CountAsync(id, CancellationToken.None);
            var charged = events.Count(e => e.EventType == "payment-charged");
            var effectsRight = view.Status == OrderStates.Confirmed
                ? counts is { Reservations: 1, Released: 0, Payments: 1, Refunded: 0, Shipments: 1 }
                : counts.Shipments == 0 && counts.Reservations <= 1 && counts.Payments == charged
                    && counts.Refunded == counts.Payments && counts.Released == counts.Reservations;
            Assert.True(effectsRight, $"order {id} is {view.Status} with these effects: {counts}; its stream: {history}");

            var saga = await sagas.LoadAsync(FulfilmentSaga.Name, view.Id);
            Assert.True(
                saga?.Status == (view.Status == OrderStates.Confirmed ? SagaStatus.Completed : SagaStatus.Compensated),
                $"order {id} is {view.Status} and its fulfilment {saga?.Status.ToString() ?? "never started"}");
        }

        var missing = model.Orders.Keys.Except(all.Select(v => Guid.Parse(v.Id))).ToList();
        Assert.True(missing.Count == 0, $"accepted orders missing from the read model: {string.Join(", ", missing)}");
        Assert.Equal(0, await services.GetRequiredService<IDeadLetterStore>().CountAsync(DeadLetterQuery.All));
    }


    /// <summary>What the model knows of one accepted order.</summary>
    private sealed class ExpectedOrder(Guid id, PlaceOrderRequest request)
    {
        public Guid Id { get; } = id;

        public PlaceOrderRequest Request { get; } = request;

        public bool Declined { get; } = request.CustomerId == Catalog.BadCardCustomer
            || request.Lines!.Sum(l => l!.Quantity!.Value * Catalog.FindProduct(l.Sku!)!.Price) > Catalog.PaymentLimit;

        // A cancel answered 202 (must end Cancelled), 422 (was Confirmed), or sent without a known outcome (either).
        public bool CancelAccepted { get; set; }

        public bool CancelRefused { get; set; }

        public bool CancelMaybe { get; set; }

        public string? LastSeen { get; set; }

        public bool Allows(string status) => status switch
        {
            OrderStates.Confirmed => !Declined && !CancelAccepted,
            OrderStates.Cancelled => Declined || CancelAccepted || (CancelMaybe && !CancelRefused),
            _ => false,
        };

        public override string ToString() => $"{Model.Describe(Request)}{(Declined ? ", declined" : "")}{(CancelAccepted ? ", cancel accepted" : "")}{(CancelRefused ? ", cancel refused" : "")}{(CancelMaybe ? ", cancel sent" : "")}";
    }

    private enum Outcome
    {
        Unknown,
        Accepted,
        Rejected,
    }

    /// <summary>A request under one Idempotency-Key: its body, and the answer kept for it once one came.</summary>
    private sealed class Keyed(string key, PlaceOrderRequest? request, string? raw, bool valid)
    {
        public string Key { get; } = key;

        public bool Valid { get; set; } = valid;

        public PlaceOrderRequest? Request { get; set; } = request;

        public string? Raw { get; set; } = raw;

        public Outcome Outcome { get; set; }

        public HttpStatusCode Status { get; set; }

        public string Body { get; set; } = "";

        public bool RetryAfterKill { get; set; }
    }

    private sealed class Model(Random random)
    {
        private static readonly string[] Customers = ["ada", "grace", "linus", "alan", Catalog.BadCardCustomer];
        private static readonly string[] Skus = ["keyboard", "mouse", "monitor", "cable", "laptop"];
        private static readonly string[] Ranks = [OrderStates.Placed, OrderStates.StockReserved, OrderStates.Paid, OrderStates.Confirmed];
        private readonly ConcurrentQueue<string> _operations = new();
        private readonly List<Keyed> _keys = [];
        private readonly ConcurrentBag<PlaceOrderRequest> _cutOffWithoutKey = [];
        private readonly HashSet<Keyed> _busy = [];
        private int _next;
        private int _cutOff;

        public Random Random { get; } = random;

        public IEnumerable<string> Operations => _operations;

        public ConcurrentDictionary<Guid, ExpectedOrder> Orders { get; } = new();

        // Cut off by a kill and never asked again: their orders may be there (whole) or not at all.
        public IEnumerable<PlaceOrderRequest> NeverRetried =>
            _keys.Where(k => k is { Outcome: Outcome.Unknown, Request: not null }).Select(k => k.Request!).Concat(_cutOffWithoutKey);

        public void Log(string operation) => _operations.Enqueue($"{DateTime.UtcNow:HH:mm:ss.fff} {operation}");

        public string Summary() =>
            $"{_cutOff} POSTs cut off by kills, {Orders.Count} orders accepted ({Orders.Values.Count(o => o.LastSeen == OrderStates.Confirmed)} confirmed), {_keys.Count(k => k.Outcome == Outcome.Rejected)} keys refused 400, {NeverRetried.Count()} cut off and never retried, {_operations.Count} operations";

        public static string Describe(PlaceOrderRequest request) => Describe(request.CustomerId, request.Lines!.Select(l => (l!.Sku, l.Quantity!.Value)));

        public static string Describe(string? customer, IEnumerable<(string? Sku, int Quantity)> lines) =>
            $"{customer}: {string.Join(' ', lines.Select(l => $"{l.Quantity}x{l.Sku}"))}";

        /// <summary>The next operations run at once, until the next call.</summary>
        public List<Func<HttpClient, Task>> NextBurst(int size)
        {
            _busy.Clear();
            return [.. Enumerable.Range(0, size).Select(_ => NextOperation())];
        }

        // Chosen with the seeded random, on the caller's thread, before any request of a burst runs.
        private Func<HttpClient, Task> NextOperation()
        {
            var n = Interlocked.Increment(ref _next);
            // A key is used by one request of a burst only (but for NewKeyed's deliberate twice), so each answer is expected.
            var known = _keys.Where(k => k.Outcome != Outcome.Unknown && !_busy.Contains(k)).ToList();
            var unknown = _keys.Where(k => k is { Outcome: Outcome.Unknown, RetryAfterKill: true } && !_busy.Contains(k)).ToList();
            var roll = Random.Next(100);
            switch (roll)
            {
                case < 30:
                    return NewKeyed(n, ValidRequest(), raw: null, valid: true);
                case < 40:
                    return NewKeyed(n, InvalidRequest(out var raw), raw, valid: false);
                case < 48:
                    var request = ValidRequest();
                    return http => PostWithoutKeyAsync(http, n, request);
                case < 62 when known.Count > 0:
                    var again = known[Random.Next(known.Count)];
                    _busy.Add(again);
                    return http => RepeatAsync(http, n, again);
                case < 68 when known.Count > 0:
                    var reused = known[Random.Next(known.Count)];
                    _busy.Add(reused);
                    var other = reused.Request is { Lines: [{ } first, ..] } own && reused.Valid
                        ? own with { Lines = [first with { Quantity = first.Quantity + 1 }, .. own.Lines.Skip(1)] }
                        : ValidRequest();
                    return http => ReuseAsync(http, n, reused, other);
                case < 76 when unknown.Count > 0:
                    var cutOff = unknown[Random.Next(unknown.Count)];
                    _busy.Add(cutOff);
                    return http => RetryAsync(http, n, cutOff);
                case < 88 when !Orders.IsEmpty:
                    var read = Orders.Values.ElementAt(Random.Next(Orders.Count));
                    return http => GetAsync(http, n, read);
                case < 92:
                    var missing = Guid.NewGuid();
                    return http => GetMissingAsync(http, n, missing);
                case < 100 when !Orders.IsEmpty:
                    var cancelled = Orders.Values.ElementAt(Random.Next(Orders.Count));
                    return http => CancelAsync(http, n, cancelled);
                default:
                    return NewKeyed(n, ValidRequest(), raw: null, valid: true);
            }
        }

        // The last life retries, with its key and body, each cut-off request the model chose to retry, until answered (a key
        // held by a killed attempt answers 409 until its lock expires).
        public async Task ResolveRetriedUnknownsAsync(HttpClient http)
        {
            var n = Interlocked.Increment(ref _next);
            await Eventually.UntilAsync(
                async () =>
                {
                    foreach (var keyed in _keys.Where(k => k is { Outcome: Outcome.Unknown, RetryAfterKill: true }).ToList())
                    {
                        await RetryAsync(http, n, keyed);
                    }

                    return !_keys.Any(k => k is { Outcome: Outcome.Unknown, RetryAfterKill: true });
                },
                "every cut-off request chosen for a retry was answered");
        }

        public void Saw(ExpectedOrder order, OrderView view)
        {
            lock (order)
            {
                // Statuses only move on: Placed, StockReserved, Paid, Confirmed; Cancelled after any but Confirmed; a final one stays.
                var before = order.LastSeen;
                var moved = before is null || before == view.Status
                    || (before != OrderStates.Cancelled && view.Status == OrderStates.Cancelled && before != OrderStates.Confirmed)
                    || (Array.IndexOf(Ranks, view.Status) > Array.IndexOf(Ranks, before) && before != OrderStates.Cancelled);
                Assert.True(moved, $"order {order.Id} went from {before} back to {view.Status}");
                Assert.True(Array.IndexOf(Ranks, view.Status) >= 0 || view.Status == OrderStates.Cancelled, $"order {order.Id} has the unknown status {view.Status}");
                Assert.True(view.CustomerId == order.Request.CustomerId, $"order {order.Id} is {view.CustomerId}'s, not {order.Request.CustomerId}'s");
                order.LastSeen = view.Status;
            }
        }

        private PlaceOrderRequest ValidRequest()
        {
            var skus = Skus.OrderBy(_ => Random.Next()).Take(Random.Next(1, 4)).ToList();
            // A laptop and a few more go past the payment limit, declined as the bad card is.
            return new PlaceOrderRequest(Customers[Random.Next(Customers.Length)], [.. skus.Select(s => new OrderLineRequest(s, Random.Next(1, 4)))]);
        }

        private PlaceOrderRequest? InvalidRequest(out string? raw)
        {
            raw = null;
            switch (Random.Next(7))
            {
                case 0: return new PlaceOrderRequest("nobody", [new OrderLineRequest("cable", 1)]);
                case 1: return new PlaceOrderRequest("ada", []);
                case 2: return new PlaceOrderRequest("ada", [new OrderLineRequest("cable", 0)]);
                case 3: return new PlaceOrderRequest("ada", [new OrderLineRequest("unicorn", 1)]);
                case 4: return new PlaceOrderRequest("ada", [new OrderLineRequest("cable", 1), new OrderLineRequest("cable", 2)]);
                case 5: return new PlaceOrderRequest("grace", [new OrderLineRequest("mouse", PlaceOrderValidator.MaxQuantity + 1)]);
                default:
                    raw = """{"customerId":"ada","lines":[{"sku":"cable","quantity":"2"}]}""";
                    return null;
            }
        }

        private Func<HttpClient, Task> NewKeyed(int n, PlaceOrderRequest? request, string? raw, bool valid)
        {
            var keyed = new Keyed($"model-{Guid.NewGuid():N}-{n}", request, raw, valid) { RetryAfterKill = Random.Next(10) < 7 };
            _keys.Add(keyed);
            // A burst posts the same new key twice now and then: one is answered, the other replays it or answers 409.
            var twice = Random.Next(8) == 0;
            return async http =>
            {
                if (twice)
                {
                    await Task.WhenAll(RetryAsync(http, n, keyed), RetryAsync(http, n, keyed));
                }
                else
                {
                    await RetryAsync(http, n, keyed);
                }
            };
        }

        // Sends the key's request; the first answer becomes the key's, later ones must replay it.
        private async Task RetryAsync(HttpClient http, int n, Keyed keyed)
        {
            var answer = await SendAsync(http, n, "POST /orders key " + keyed.Key[^6..] + " " + (keyed.Request is { } r ? Describe(r) : keyed.Raw), keyed.Key, keyed.Request, keyed.Raw);
            if (answer is not var (status, body, _) || status == HttpStatusCode.Conflict)
            {
                return;
            }

            lock (keyed)
            {
                if (keyed.Outcome != Outcome.Unknown)
                {
                    Assert.True(status == keyed.Status && (body == keyed.Body || keyed.Outcome == Outcome.Rejected), $"key {keyed.Key} answered {(int)status} {body}, not its first answer {(int)keyed.Status} {keyed.Body}");
                    return;
                }

                if (keyed is { Valid: true, Request: { } valid })
                {
                    Assert.True(status == HttpStatusCode.Accepted, $"a valid order under key {keyed.Key} was answered {(int)status}: {body}");
                    var placed = System.Text.Json.JsonSerializer.Deserialize<PlaceOrderResponse>(body, System.Text.Json.JsonSerializerOptions.Web)!;
                    var order = Orders.GetOrAdd(placed.OrderId, id => new ExpectedOrder(id, valid));
                    Assert.True(ReferenceEquals(order.Request, valid), $"order {placed.OrderId} was answered to two keys");
                    keyed.Outcome = Outcome.Accepted;
                }
                else
                {
                    Assert.True(status == HttpStatusCode.BadRequest, $"an invalid order under key {keyed.Key} was answered {(int)status}: {body}");
                    keyed.Outcome = Outcome.Rejected;
                }

                keyed.Status = status;
                keyed.Body = body;
            }
        }

        private async Task RepeatAsync(HttpClient http, int n, Keyed keyed)
        {
            var answer = await SendAsync(http, n, "repeat key " + keyed.Key[^6..], keyed.Key, keyed.Request, keyed.Raw);
            if (answer is var (status, body, replayed) && status != HttpStatusCode.Conflict)
            {
                // An accepted order's answer is stored and replayed byte for byte. A 400 is the validator's (or the binder's)
                // exception, which frees the key (docs/aspnetcore.md): the request runs again and is refused again.
                var expected = keyed.Outcome == Outcome.Accepted ? status == keyed.Status && body == keyed.Body && replayed : status == HttpStatusCode.BadRequest && !replayed;
                Assert.True(expected, $"key {keyed.Key} repeated answered {(int)status} (replayed: {replayed}) {body}, its first answer was {(int)keyed.Status} {keyed.Body}");
            }
        }

        // The key of an accepted order, reused for another body: 422, nothing placed. The key of a refused request was freed by
        // the refusal, so the corrected body is placed under it, and from then on the key is that order's.
        private async Task ReuseAsync(HttpClient http, int n, Keyed keyed, PlaceOrderRequest other)
        {
            var wasAccepted = keyed.Outcome == Outcome.Accepted;
            var answer = await SendAsync(http, n, $"reuse key {keyed.Key[^6..]} for {Describe(other)}", keyed.Key, other, null);
            if (answer is null && !wasAccepted)
            {
                // Cut off: the corrected order may be placed under the key or not; its retry (with this body) will tell.
                lock (keyed)
                {
                    (keyed.Request, keyed.Raw, keyed.Valid, keyed.Outcome) = (other, null, true, Outcome.Unknown);
                }
            }

            if (answer is not var (status, body, _) || status == HttpStatusCode.Conflict)
            {
                return;
            }

            if (wasAccepted)
            {
                Assert.True(status == HttpStatusCode.UnprocessableEntity, $"key {keyed.Key} of an accepted order reused for another body answered {(int)status}: {body}");
                return;
            }

            lock (keyed)
            {
                Assert.True(status == HttpStatusCode.Accepted, $"key {keyed.Key} refused 400, reused for a valid body, answered {(int)status}: {body}");
                var placed = System.Text.Json.JsonSerializer.Deserialize<PlaceOrderResponse>(body, System.Text.Json.JsonSerializerOptions.Web)!;
                Assert.True(Orders.TryAdd(placed.OrderId, new ExpectedOrder(placed.OrderId, other)), $"order {placed.OrderId} was answered twice");
                (keyed.Request, keyed.Raw, keyed.Valid, keyed.Outcome, keyed.Status, keyed.Body) = (other, null, true, Outcome.Accepted, status, body);
            }
        }

        private async Task PostWithoutKeyAsync(HttpClient http, int n, PlaceOrderRequest request)
        {
            var answer = await SendAsync(http, n, "POST /orders without key " + Describe(request), null, request, null);
            if (answer is not var (status, body, _))
            {
                _cutOffWithoutKey.Add(request);
                return;
            }

            Assert.True(status == HttpStatusCode.Accepted, $"a valid order without a key was answered {(int)status}: {body}");
            var placed = System.Text.Json.JsonSerializer.Deserialize<PlaceOrderResponse>(body, System.Text.Json.JsonSerializerOptions.Web)!;
            Assert.True(Orders.TryAdd(placed.OrderId, new ExpectedOrder(placed.OrderId, request)), $"order {placed.OrderId} was answered twice");
        }

        private async Task GetAsync(HttpClient http, int n, ExpectedOrder order)
        {
            Log($"#{n} GET order {order.Id}");
            try
            {
                using var response = await http.GetAsync($"/orders/{order.Id}");
                var body = await response.Content.ReadAsStringAsync();
                Log($"#{n} -> {(int)response.StatusCode} {Cut(body)}");
                // 503: the read model has not caught up within the wait (a loaded machine, a service just restarted).
                Assert.True(response.StatusCode is HttpStatusCode.OK or HttpStatusCode.ServiceUnavailable, $"GET of accepted order {order.Id} answered {(int)response.StatusCode}: {body}");
                if (response.StatusCode == HttpStatusCode.OK)
                {
                    Saw(order, System.Text.Json.JsonSerializer.Deserialize<OrderView>(body, System.Text.Json.JsonSerializerOptions.Web)!);
                }
            }
            catch (HttpRequestException)
            {
                Log($"#{n} cut off");
            }
        }

        private async Task GetMissingAsync(HttpClient http, int n, Guid id)
        {
            Log($"#{n} GET missing {id}");
            try
            {
                using var response = await http.GetAsync($"/orders/{id}");
                Assert.True(response.StatusCode == HttpStatusCode.NotFound && response.Content.Headers.ContentType?.MediaType == "application/problem+json", $"GET of no order answered {(int)response.StatusCode}");
            }
            catch (HttpRequestException)
            {
                Log($"#{n} cut off");
            }
        }

        private async Task CancelAsync(HttpClient http, int n, ExpectedOrder order)
        {
            Log($"#{n} cancel {order.Id}");
            lock (order)
            {
                order.CancelMaybe = true;
            }

            try
            {
                using var response = await http.PostAsync($"/orders/{order.Id}/cancel", null);
                var body = await response.Content.ReadAsStringAsync();
                Log($"#{n} -> {(int)response.StatusCode} {Cut(body)}");
                // 202 cancelled (or it was already), 422 confirmed already, 409 the saga moved the order at the same time.
                Assert.True(response.StatusCode is HttpStatusCode.Accepted or HttpStatusCode.UnprocessableEntity or HttpStatusCode.Conflict, $"cancel of {order.Id} answered {(int)response.StatusCode}: {body}");
                lock (order)
                {
                    order.CancelAccepted |= response.StatusCode == HttpStatusCode.Accepted;
                    order.CancelRefused |= response.StatusCode == HttpStatusCode.UnprocessableEntity;
                }
            }
            catch (HttpRequestException)
            {
                Log($"#{n} cut off");
            }
        }

        // The status, body and replay mark of a POST /orders; null when a kill cut it off. 5xx is never an answer here.
        private async Task<(HttpStatusCode Status, string Body, bool Replayed)?> SendAsync(HttpClient http, int n, string what, string? key, PlaceOrderRequest? request, string? raw)
        {
            Log($"#{n} {what}");
            using var message = new HttpRequestMessage(HttpMethod.Post, "/orders")
            {
                Content = raw is null ? JsonContent.Create(request) : new StringContent(raw, Encoding.UTF8, "application/json"),
            };
            if (key is not null)
            {
                message.Headers.Add("Idempotency-Key", key);
            }

            try
            {
                using var response = await http.SendAsync(message);
                var body = await response.Content.ReadAsStringAsync();
                var replayed = response.Headers.TryGetValues("Idempotency-Replayed", out var values) && values.Contains("true");
                Log($"#{n} -> {(int)response.StatusCode}{(replayed ? " replayed" : "")} {Cut(body)}");
                Assert.True((int)response.StatusCode < 500, $"POST /orders answered {(int)response.StatusCode}: {body}");
                if ((int)response.StatusCode >= 400)
                {
                    Assert.Equal("application/problem+json", response.Content.Headers.ContentType?.MediaType);
                }

                return ((HttpStatusCode)response.StatusCode, body, replayed);
            }
            catch (HttpRequestException)
            {
                Log($"#{n} cut off");
                Interlocked.Increment(ref _cutOff);
                return null;
            }
        }

        private static string Cut(string body) => body.Length <= 160 ? body : body[..160] + "…";
    }

    /// <summary>The valid streams of an order, as a state machine independent of the aggregate's code.</summary>
    private static class StreamGrammar
    {
        // The read model's final status the stream ends in, or null when the stream breaks a rule.
        public static string? Check(IReadOnlyList<string> events)
        {
            if (events.Count == 0 || events[0] != "order-placed")
            {
                return null;
            }

            bool reserved = false, released = false, charged = false, refunded = false, confirmed = false, cancelled = false;
            foreach (var type in events.Skip(1))
            {
                var ok = type switch
                {
                    "stock-reserved" => !reserved && !confirmed && !cancelled,
                    "payment-charged" => reserved && !released && !charged && !confirmed && !cancelled,
                    "order-confirmed" => charged && !refunded && !confirmed && !cancelled,
                    "order-cancelled" => !confirmed && !cancelled,
                    "payment-refunded" => charged && !refunded && !confirmed,
                    "stock-released" => reserved && !released && !confirmed && (!charged || refunded),
                    _ => false,
                };
                if (!ok)
                {
                    return null;
                }

                reserved |= type == "stock-reserved";
                released |= type == "stock-released";
                charged |= type == "payment-charged";
                refunded |= type == "payment-refunded";
                confirmed |= type == "order-confirmed";
                cancelled |= type == "order-cancelled";
            }

            return confirmed ? OrderStates.Confirmed
                : cancelled && reserved == released && charged == refunded ? OrderStates.Cancelled
                : null;
        }
    }
}
