using System.Collections.Concurrent;
using System.Net;
using System.Security.Claims;
using System.Text;
using Herald.Reliability.Idempotency;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Time.Testing;
using Xunit.Abstractions;
using Xunit.Sdk;

namespace Herald.AspNetCore.Tests;

/// <summary>
/// A seeded model of <c>WithIdempotencyKey</c> on a real Kestrel: a seed drives requests over a few keys, users, routes,
/// methods, bodies and media types (first requests, replays, concurrent duplicates held on a signal, handlers that fail or
/// answer 4xx, handlers outliving the key's lock, expiry on a fake clock, restarts on the same store), and every response is
/// checked against what docs/aspnetcore.md promises, and every handler run against the requests the model says run it.
/// A failure names the seed (HERALD_MODEL_SEED replays one) and the request log.
/// </summary>
public sealed class IdempotencyKeyModelTests(ITestOutputHelper output)
{
    private static readonly TimeSpan Expiration = TimeSpan.FromMinutes(10);
    private static readonly TimeSpan LockTimeout = TimeSpan.FromSeconds(30);
    private static readonly TimeSpan Wait = TimeSpan.FromSeconds(10);

    private static readonly string[] RepresentationHeaders =
        ["Cache-Control", "Content-Disposition", "Content-Encoding", "Content-Language", "Content-Location", "ETag", "Expires", "Last-Modified", "Vary"];

    // (method, target, route pattern, scoped by user only): /u/* share one namespace per user across routes.
    private static readonly (string Method, string Target, string Route, bool UserScope)[] Targets =
    [
        ("POST", "/r/a", "/r/a", false),
        ("POST", "/r/a?v=2", "/r/a", false),
        ("PUT", "/r/a", "/r/a", false),
        ("POST", "/r/b", "/r/b", false),
        ("POST", "/u/a", "/u/a", true),
        ("POST", "/u/b", "/u/b", true),
    ];

    // Spellings of media types, with the one spelling the docs say they compare as.
    private static readonly (string Sent, string Compared)[] MediaTypes =
    [
        ("application/json", "application/json"),
        ("application/json; charset=utf-8", "application/json;charset=utf-8"),
        ("Application/JSON;Charset=\"UTF-8\"", "application/json;charset=utf-8"),
        ("text/plain", "text/plain"),
    ];

    private static readonly string[] Bodies = ["""{"n":1}""", """{"n":2}""", ""];
    private static readonly string?[] Users = [null, "ann", "bob"];
    private static readonly string[] Keys = ["k1", "k2", "k3"];

    private static readonly (string Behaviour, int Weight)[] Behaviours =
    [
        ("ok", 30), ("created", 12), ("nocontent", 5), ("bad", 6), ("notfound", 5), ("throw", 8), ("503", 8), ("409", 4), ("429", 4), ("408", 2),
    ];

    [Theory]
    [InlineData("memory")]
    [InlineData("sqlite")]
    [InlineData("postgres")]
    [InlineData("redis")]
    public async Task SeededRequestSequences_AreAnsweredAsTheDocsPromise(string store)
    {
        var seeds = Environment.GetEnvironmentVariable("HERALD_MODEL_SEED") is { Length: > 0 } one
            ? [int.Parse(one, System.Globalization.CultureInfo.InvariantCulture)]
            : Enumerable.Range(1, 8).Select(i => i * 7919 + store.Sum(c => c)).ToArray();
        foreach (var seed in seeds)
        {
            var run = new Run(store, seed);
            await run.ExecuteAsync();
            output.WriteLine($"seed {seed}: {run.Summary}");
        }
    }

    /// <summary>The request an attempt sends: what the model needs to know of it.</summary>
    private sealed record Shape(int Target, string? User, string Key, bool QuotedKey, int Body, int Media)
    {
        public string Method => Targets[Target].Method;

        public string Namespace => Targets[Target].UserScope
            ? $"user|{User}|{Key}"
            : $"route|{Targets[Target].Method} {Targets[Target].Route}|{User}|{Key}";

        public string Fingerprint => $"{Targets[Target].Method} {Targets[Target].Target}|{Bodies[Body]}|{MediaTypes[Media].Compared}";

        public override string ToString() =>
            $"{Targets[Target].Method} {Targets[Target].Target} user={User ?? "-"} key={(QuotedKey ? $"\"{Key}\"" : Key)} body='{Bodies[Body]}' type='{MediaTypes[Media].Sent}'";
    }

    /// <summary>A response as the client saw it.</summary>
    private sealed record Seen(int Status, byte[] Body, string? ContentType, string? Location, Dictionary<string, string?> Representation, string? Replayed, string? RetryAfter, bool Cookie, bool XRun)
    {
        public static async Task<Seen> OfAsync(HttpResponseMessage response)
        {
            var representation = RepresentationHeaders.ToDictionary(name => name, name => Header(response, name));
            return new Seen(
                (int)response.StatusCode,
                await response.Content.ReadAsByteArrayAsync(),
                Header(response, "Content-Type"),
                Header(response, "Location"),
                representation,
                Header(response, "Idempotency-Replayed"),
                Header(response, "Retry-After"),
                Header(response, "Set-Cookie") is not null,
                Header(response, "X-Run") is not null);
        }

        public override string ToString() => $"{Status} type={ContentType ?? "-"} replayed={Replayed ?? "-"} body={Encoding.UTF8.GetString(Body)}";

        private static string? Header(HttpResponseMessage response, string name) =>
            response.Headers.TryGetValues(name, out var values) || response.Content.Headers.TryGetValues(name, out values) ? string.Join(", ", values) : null;
    }

    /// <summary>A stored response; a bare status's body is the pipeline's (UseStatusCodePages), made afresh on each replay.</summary>
    private sealed record Completed(string Fingerprint, Seen Response, DateTimeOffset At, bool Bare);

    // What a problem the pipeline wrote for a bare status keeps from one request to the next.
    private static string WithoutRequestIds(byte[] body) =>
        System.Text.RegularExpressions.Regex.Replace(Encoding.UTF8.GetString(body), "\"(traceId|correlationId)\":\"[^\"]*\"", "\"$1\":\"*\"");

    /// <summary>The application's side: which requests ran the handler, the held ones, lock renewals.</summary>
    private sealed class Handlers
    {
        public ConcurrentDictionary<string, int> Ran { get; } = new();

        public ConcurrentDictionary<string, (TaskCompletionSource Entered, TaskCompletionSource<string> Release)> Holds { get; } = new();

        public System.Threading.Channels.Channel<bool> Renewals { get; } = System.Threading.Channels.Channel.CreateUnbounded<bool>();

        public (TaskCompletionSource Entered, TaskCompletionSource<string> Release) Hold(string request) =>
            Holds.GetOrAdd(request, _ => (new(TaskCreationOptions.RunContinuationsAsynchronously), new(TaskCreationOptions.RunContinuationsAsynchronously)));

        public async Task HandleAsync(HttpContext http)
        {
            var request = http.Request.Headers["X-Req"].ToString();
            var behaviour = http.Request.Headers["X-Behaviour"].ToString();
            using var reader = new StreamReader(http.Request.Body);
            var body = await reader.ReadToEndAsync();
            var run = Ran.AddOrUpdate(request, 1, (_, n) => n + 1);
            if (behaviour == "hold")
            {
                var hold = Hold(request);
                hold.Entered.TrySetResult();
                behaviour = await hold.Release.Task;
            }

            var response = http.Response;
            var id = Guid.NewGuid();
            switch (behaviour)
            {
                case "ok":
                    response.ContentType = "application/json";
                    response.Headers.ETag = $"\"{id:N}\"";
                    response.Headers.SetCookie = "session=" + request;
                    response.Headers["X-Run"] = request;
                    await response.WriteAsync($$"""{"req":"{{request}}","run":{{run}},"id":"{{id}}","body":{{System.Text.Json.JsonSerializer.Serialize(body)}}}""");
                    break;
                case "created":
                    response.StatusCode = StatusCodes.Status201Created;
                    response.ContentType = "text/plain; charset=utf-8";
                    response.Headers.Location = "/things/" + id;
                    response.Headers.ContentLanguage = "en";
                    response.Headers.CacheControl = "private, max-age=60";
                    response.Headers["X-Run"] = request;
                    await response.WriteAsync($"created {request} {id}");
                    break;
                case "nocontent":
                    response.StatusCode = StatusCodes.Status204NoContent;
                    break;
                case "bad":
                    response.StatusCode = StatusCodes.Status400BadRequest;
                    response.ContentType = "application/json";
                    await response.WriteAsync($$"""{"error":"bad","req":"{{request}}","id":"{{id}}"}""");
                    break;
                case "notfound":
                    response.StatusCode = StatusCodes.Status404NotFound;
                    break;
                case "throw":
                    throw new InvalidOperationException("the handler failed");
                default:
                    response.StatusCode = int.Parse(behaviour, System.Globalization.CultureInfo.InvariantCulture);
                    await response.WriteAsync("try again " + request);
                    break;
            }
        }
    }

    /// <summary>The store the application was given, telling each lock renewal's result.</summary>
    private sealed class SignallingStore(IIdempotencyStore inner, Handlers handlers) : IIdempotencyStore
    {
        public ValueTask<IdempotencyAcquireResult> TryAcquireAsync(string key, TimeSpan lockTtl, CancellationToken cancellationToken = default) => inner.TryAcquireAsync(key, lockTtl, cancellationToken);

        public ValueTask<bool> CompleteAsync(string key, Guid lockToken, ReadOnlyMemory<byte> result, TimeSpan ttl, CancellationToken cancellationToken = default) =>
            inner.CompleteAsync(key, lockToken, result, ttl, cancellationToken);

        public ValueTask<bool> ReleaseAsync(string key, Guid lockToken, CancellationToken cancellationToken = default) => inner.ReleaseAsync(key, lockToken, cancellationToken);

        public async ValueTask<bool> RenewAsync(string key, Guid lockToken, TimeSpan lockTtl, CancellationToken cancellationToken = default)
        {
            var renewed = await inner.RenewAsync(key, lockToken, lockTtl, cancellationToken);
            handlers.Renewals.Writer.TryWrite(renewed);
            return renewed;
        }
    }

    private sealed class Run(string storeKind, int seed)
    {
        private readonly Random _random = new(seed);
        private readonly FakeTimeProvider _clock = new(DateTimeOffset.Parse("2026-01-01T00:00:00Z", System.Globalization.CultureInfo.InvariantCulture));
        private readonly Handlers _handlers = new();
        private readonly Dictionary<string, Completed> _completed = [];
        private readonly HashSet<string> _expectedRuns = [];
        private readonly List<string> _log = [];
        private readonly string _id = Guid.NewGuid().ToString("N")[..12];
        private InMemoryIdempotencyStore? _memory;
        private string? _directory;
        private Shape? _last;
        private int _requests;
        private TestApp _app = null!;

        public string Summary => string.Join(", ", _log.Select(l => System.Text.RegularExpressions.Regex.Match(l, @"model: (\w+)|^(race|restart|clock|release)|lock renewed").Value)
            .Where(v => v.Length > 0).GroupBy(v => v).Select(g => $"{g.Key} x{g.Count()}"));

        public async Task ExecuteAsync()
        {
            _directory = storeKind == "sqlite" ? Directory.CreateTempSubdirectory("herald-model-").FullName : null;
            _memory = storeKind == "memory" ? new InMemoryIdempotencyStore(_clock) : null;
            try
            {
                _app = await StartAsync();
                try
                {
                    for (var step = 0; step < 30; step++)
                    {
                        await StepAsync();
                    }

                    var unexpected = _handlers.Ran.Where(r => r.Value != 1 || !_expectedRuns.Contains(r.Key)).Select(r => $"{r.Key} x{r.Value}").ToList();
                    var missing = _expectedRuns.Where(r => !_handlers.Ran.ContainsKey(r)).ToList();
                    Check(unexpected.Count == 0 && missing.Count == 0, $"handler runs differ from the model: unexpected [{string.Join(", ", unexpected)}], missing [{string.Join(", ", missing)}]");
                }
                finally
                {
                    foreach (var hold in _handlers.Holds.Values)
                    {
                        hold.Release.TrySetResult("503");
                    }

                    await _app.DisposeAsync();
                }
            }
            catch (Exception ex) when (ex is not ModelFailure)
            {
                throw new ModelFailure($"seed {seed} ({storeKind}) failed: {ex.GetType().Name}: {ex.Message}\nrequest log:\n{string.Join("\n", _log)}", ex);
            }
            finally
            {
                if (_directory is not null)
                {
                    Microsoft.Data.Sqlite.SqliteConnection.ClearAllPools();
                    Directory.Delete(_directory, recursive: true);
                }

                if (storeKind == "postgres")
                {
                    await TestServers.DropSchemaAsync(Schema);
                }
            }
        }

        private string Schema => "http_model_" + _id;

        private Task<TestApp> StartAsync() => TestApp.StartAsync(
            app =>
            {
                app.Use((context, next) =>
                {
                    if (context.Request.Headers.TryGetValue("X-Test-User", out var user))
                    {
                        context.User = new ClaimsPrincipal(new ClaimsIdentity([new Claim(ClaimTypes.Name, user.ToString())], "test"));
                    }

                    return next(context);
                });
                void Options(IdempotencyKeyOptions o)
                {
                    o.Expiration = Expiration;
                    o.RetryAfter = TimeSpan.FromSeconds(2);
                }

                app.MapMethods("/r/a", ["POST", "PUT"], _handlers.HandleAsync).WithIdempotencyKey(Options);
                app.MapPost("/r/b", _handlers.HandleAsync).WithIdempotencyKey(Options);
                var byUser = app.MapGroup("/u").WithIdempotencyKey(o =>
                {
                    Options(o);
                    o.Scope = IdempotencyKeyScope.User;
                });
                byUser.MapPost("/a", _handlers.HandleAsync);
                byUser.MapPost("/b", _handlers.HandleAsync);
            },
            h =>
            {
                h.ConfigureIdempotency(o => o.LockTimeout = LockTimeout);
                switch (storeKind)
                {
                    case "sqlite":
                        h.UseSqlite(Path.Combine(_directory!, "herald.db"));
                        break;
                    case "postgres":
                        h.UsePostgres(TestServers.Postgres, o => o.Schema = Schema);
                        break;
                    case "redis":
                        h.UseRedis(TestServers.Redis, o => o.KeyPrefix = $"herald-http-model:{_id}:");
                        break;
                }
            },
            s =>
            {
                s.AddSingleton<TimeProvider>(_clock);
                if (_memory is not null)
                {
                    s.AddSingleton<IIdempotencyStore>(_memory);
                }
            },
            kestrel: true,
            servicesAfterHerald: s =>
            {
                var registered = s.Last(d => d.ServiceType == typeof(IIdempotencyStore));
                s.Remove(registered);
                s.AddSingleton<IIdempotencyStore>(sp => new SignallingStore(
                    (IIdempotencyStore)(registered.ImplementationInstance
                        ?? registered.ImplementationFactory?.Invoke(sp)
                        ?? ActivatorUtilities.CreateInstance(sp, registered.ImplementationType!)),
                    _handlers));
            });

        private async Task StepAsync()
        {
            var roll = _random.Next(100);
            if (roll < 60)
            {
                await SingleAsync();
            }
            else if (roll < 75)
            {
                await HeldAsync();
            }
            else if (roll < 85)
            {
                await RaceAsync();
            }
            else if (roll < 93)
            {
                _clock.Advance(TimeSpan.FromMinutes(7));
                _log.Add($"clock +7 min -> {_clock.GetUtcNow():HH:mm:ss}");
            }
            else
            {
                await _app.DisposeAsync();
                _app = await StartAsync();
                _log.Add("restart on the same store");
            }
        }

        private Task SingleAsync() => SendOneAsync(NextShape());

        private async Task SendOneAsync(Shape shape)
        {
            var behaviour = NextBehaviour();
            var (name, sent) = Send(shape, behaviour);
            Observe(name, shape, behaviour, await Seen.OfAsync(await sent.WaitAsync(Wait)));
        }

        // A first request held in its handler (the key's lock held): duplicates (same or other body) get 409, the lock is
        // renewed past its timeout, and the first ends as it ends.
        private async Task HeldAsync()
        {
            if (await FreeShapeAsync() is not { } shape)
            {
                return;
            }

            var (name, sent) = Send(shape, "hold");
            var hold = _handlers.Hold(name);
            await Task.WhenAny(hold.Entered.Task, sent).WaitAsync(Wait);
            Check(hold.Entered.Task.IsCompleted, $"{name} was not held in its handler: {(sent.IsCompleted ? await Seen.OfAsync(await sent) : null)}");
            _expectedRuns.Add(name);
            await DuplicatesAsync(shape);
            if (_random.Next(2) == 0)
            {
                // Renewed every third of the timeout: the renewal at 10 s holds the lock to 40 s, so at 35 s it still holds. The
                // renewal an earlier hold made at 20 s (the +25 s below) is dropped first: read as this one's, it let the
                // duplicate below race this hold's renewal still on its way to the store.
                while (_handlers.Renewals.Reader.TryRead(out _))
                {
                }

                _clock.Advance(LockTimeout / 3);
                var renewal = _handlers.Renewals.Reader.ReadAsync().AsTask();
                await Task.WhenAny(renewal, Task.Delay(Wait));
                Check(renewal.IsCompletedSuccessfully && renewal.Result, $"the lock of {name} was not renewed a third of its timeout after it was taken ({(renewal.IsCompleted ? "the renewal found it lost" : "no renewal reached the store")})");
                _clock.Advance(LockTimeout * 5 / 6);
                _log.Add($"clock +35 s with {name} held (lock renewed) -> {_clock.GetUtcNow():HH:mm:ss}");
                await DuplicatesAsync(shape);
            }

            await ReleaseAsync(name, shape, sent);
        }

        // Two requests of one free key at once, both to be held: exactly one runs, the other gets 409.
        private async Task RaceAsync()
        {
            if (await FreeShapeAsync() is not { } shape)
            {
                return;
            }

            var twin = _random.Next(2) == 0 ? shape : shape with { Body = (shape.Body + 1) % Bodies.Length, QuotedKey = !shape.QuotedKey };
            var (a, sentA) = Send(shape, "hold");
            var (b, sentB) = Send(twin, "hold");
            var holdA = _handlers.Hold(a);
            var holdB = _handlers.Hold(b);
            await Task.WhenAny(holdA.Entered.Task, holdB.Entered.Task).WaitAsync(Wait);
            var (winner, winnerShape, winnerSent, loser, loserShape, loserSent) = holdA.Entered.Task.IsCompleted
                ? (a, shape, sentA, b, twin, sentB)
                : (b, twin, sentB, a, shape, sentA);
            var refused = await Seen.OfAsync(await loserSent.WaitAsync(Wait));
            _log.Add($"race: {winner} entered; {loser} -> {refused}");
            CheckInFlight(loser, refused);
            _expectedRuns.Add(winner);
            await ReleaseAsync(winner, winnerShape, winnerSent);
            Check(!_handlers.Ran.ContainsKey(loser), $"{loser} ran its handler beside {winner}");
        }

        // A request of a key the model holds free; else the step is a single request of that shape's key.
        private async Task<Shape?> FreeShapeAsync()
        {
            var shape = NextShape();
            if (Expect(shape) == "run")
            {
                return shape;
            }

            await SendOneAsync(shape);
            return null;
        }

        // Lets a held handler end as the seed says, and checks its response.
        private async Task ReleaseAsync(string name, Shape shape, Task<HttpResponseMessage> sent)
        {
            var final = NextFinal();
            _log.Add($"release {name} as {final}");
            _handlers.Hold(name).Release.SetResult(final);
            CheckRun(name, shape, final, await Seen.OfAsync(await sent.WaitAsync(Wait)));
        }

        private async Task DuplicatesAsync(Shape held)
        {
            for (var i = _random.Next(1, 3); i > 0; i--)
            {
                var duplicate = held with { Body = _random.Next(Bodies.Length), Media = _random.Next(MediaTypes.Length), QuotedKey = _random.Next(2) == 0 };
                if (Targets[held.Target].UserScope)
                {
                    duplicate = duplicate with { Target = _random.Next(4, 6) };
                }

                var (name, sent) = Send(duplicate, "ok");
                var response = await Seen.OfAsync(await sent.WaitAsync(Wait));
                _log.Add($"  {name} -> {response}");
                CheckInFlight(name, response);
            }
        }

        private void Observe(string name, Shape shape, string behaviour, Seen response)
        {
            var expected = Expect(shape);
            _log.Add($"  {name} -> {response} (model: {expected})");
            switch (expected)
            {
                case "run":
                    _expectedRuns.Add(name);
                    CheckRun(name, shape, behaviour, response);
                    break;
                case "replay":
                    var (first, bare) = (_completed[shape.Namespace].Response, _completed[shape.Namespace].Bare);
                    Check(response.Status == first.Status, $"{name}: replay status {response.Status}, first {first.Status}");
                    Check(bare ? WithoutRequestIds(response.Body) == WithoutRequestIds(first.Body) : response.Body.AsSpan().SequenceEqual(first.Body), $"{name}: replayed body differs from the first:\n first  {Encoding.UTF8.GetString(first.Body)}\n replay {Encoding.UTF8.GetString(response.Body)}");
                    Check(response.ContentType == first.ContentType, $"{name}: replay Content-Type {response.ContentType}, first {first.ContentType}");
                    Check(response.Location == first.Location, $"{name}: replay Location {response.Location}, first {first.Location}");
                    foreach (var header in RepresentationHeaders)
                    {
                        Check(response.Representation[header] == first.Representation[header], $"{name}: replay {header} '{response.Representation[header]}', first '{first.Representation[header]}'");
                    }

                    Check(response.Replayed == "true", $"{name}: a replay without Idempotency-Replayed: true");
                    Check(!response.Cookie && !response.XRun, $"{name}: a replay carries Set-Cookie or X-Run");
                    Check(!_handlers.Ran.ContainsKey(name), $"{name}: a replay ran the handler");
                    break;
                case "mismatch":
                    Check(response.Status == 422, $"{name}: expected 422 for the key's other request ({_completed[shape.Namespace].Fingerprint} first), got {response}");
                    Check(response.ContentType == "application/problem+json", $"{name}: 422 without a problem");
                    Check(!_handlers.Ran.ContainsKey(name), $"{name}: a mismatch ran the handler");
                    break;
            }
        }

        private void CheckInFlight(string name, Seen response)
        {
            Check(response.Status == 409, $"{name}: expected 409 while the key's first request runs, got {response}");
            Check(response.RetryAfter == "2", $"{name}: 409 with Retry-After '{response.RetryAfter}', not 2");
            Check(response.Replayed is null, $"{name}: a 409 marked replayed");
            Check(!_handlers.Ran.ContainsKey(name), $"{name}: a duplicate ran the handler while the first ran");
        }

        private void CheckRun(string name, Shape shape, string behaviour, Seen response)
        {
            var status = behaviour switch
            {
                "ok" => 200,
                "created" => 201,
                "nocontent" => 204,
                "bad" => 400,
                "notfound" => 404,
                "throw" => 500,
                _ => int.Parse(behaviour, System.Globalization.CultureInfo.InvariantCulture),
            };
            _log.Add($"  {name} ran as {behaviour} -> {response}");
            Check(response.Status == status, $"{name}: expected the handler's {status} ({behaviour}), got {response}");
            Check(response.Replayed is null, $"{name}: a first run marked replayed");
            Check(_handlers.Ran.TryGetValue(name, out var runs) && runs == 1, $"{name}: the handler ran {runs} times, not once");
            if (behaviour == "ok")
            {
                Check(Encoding.UTF8.GetString(response.Body).Contains($"\"req\":\"{name}\"", StringComparison.Ordinal), $"{name}: body is not its own run's");
            }

            // Stored (and replayed from now on) unless it failed or said to come back later (5xx, 408, 409, 423, 425, 429).
            if (status < 500 && status is not (408 or 409 or 423 or 425 or 429))
            {
                _completed[shape.Namespace] = new Completed(shape.Fingerprint, response, _clock.GetUtcNow(), behaviour is "notfound" or "nocontent");
            }
        }

        private string Expect(Shape shape)
        {
            if (_completed.TryGetValue(shape.Namespace, out var completed) && completed.At + Expiration <= _clock.GetUtcNow())
            {
                _log.Add($"  (model: {shape.Namespace} expired)");
                _completed.Remove(shape.Namespace);
                completed = null;
            }

            return completed is null ? "run" : completed.Fingerprint == shape.Fingerprint ? "replay" : "mismatch";
        }

        private (string Name, Task<HttpResponseMessage> Sent) Send(Shape shape, string behaviour)
        {
            var name = $"r{++_requests}";
            var request = new HttpRequestMessage(new HttpMethod(shape.Method), Targets[shape.Target].Target)
            {
                Content = new ByteArrayContent(Encoding.UTF8.GetBytes(Bodies[shape.Body])),
            };
            request.Content.Headers.TryAddWithoutValidation("Content-Type", MediaTypes[shape.Media].Sent);
            request.Headers.TryAddWithoutValidation("Idempotency-Key", shape.QuotedKey ? $"\"{shape.Key}\"" : shape.Key);
            request.Headers.Add("X-Req", name);
            request.Headers.Add("X-Behaviour", behaviour);
            if (shape.User is not null)
            {
                request.Headers.Add("X-Test-User", shape.User);
            }

            _log.Add($"{name}: {shape} behaviour={behaviour}");
            _last = shape;
            return (name, _app.Client.SendAsync(request));
        }

        // Mostly a retry of the last request, or it with one thing changed, so keys meet again.
        private Shape NextShape()
        {
            if (_last is { } last && _random.Next(100) < 55)
            {
                return _random.Next(7) switch
                {
                    0 or 1 => last with { QuotedKey = !last.QuotedKey },
                    2 => last with { Body = _random.Next(Bodies.Length) },
                    3 => last with { Media = _random.Next(MediaTypes.Length) },
                    4 => last with { Target = _random.Next(Targets.Length) },
                    5 => last with { User = Users[_random.Next(Users.Length)] },
                    _ => last,
                };
            }

            return new Shape(_random.Next(Targets.Length), Users[_random.Next(Users.Length)], Keys[_random.Next(Keys.Length)], _random.Next(2) == 0, _random.Next(Bodies.Length), _random.Next(MediaTypes.Length));
        }

        private string NextBehaviour()
        {
            var pick = _random.Next(Behaviours.Sum(b => b.Weight));
            foreach (var (behaviour, weight) in Behaviours)
            {
                if ((pick -= weight) < 0)
                {
                    return behaviour;
                }
            }

            return "ok";
        }

        private string NextFinal() => new[] { "ok", "created", "bad", "503", "throw" }[_random.Next(5)];

        private void Check(bool condition, string problem)
        {
            if (!condition)
            {
                throw new ModelFailure($"seed {seed} ({storeKind}): {problem}\nrequest log:\n{string.Join("\n", _log)}");
            }
        }
    }

    private sealed class ModelFailure(string message, Exception? inner = null) : XunitException(message, inner);
}
