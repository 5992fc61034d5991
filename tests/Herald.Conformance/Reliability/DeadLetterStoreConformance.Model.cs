using System.Globalization;
using System.Text;
using Herald.Messages;
using Herald.Reliability.DeadLetters;
using Herald.Transport.InMemory;
using Microsoft.Extensions.Time.Testing;
using Xunit;

namespace Herald.Conformance.Reliability;

public abstract partial class DeadLetterStoreConformance
{
    // The header a retry from the dead letters adds (docs/reliability.md): a version 7 id of the retry.
    private const string RetryHeader = "herald-dead-letter-retry";

    /// <summary>Operations each seed of the dead-letter model test runs; lower it for a slow store.</summary>
    protected virtual int DeadLetterModelOperations => 150;

    /// <summary>The seeds of the dead-letter model tests: fixed, so a failure names one that reproduces it.</summary>
    public static TheoryData<int> DeadLetterModelSeeds => [1, 2, 3, 4, 5, 6];

    /// <summary>
    /// A second store on the database of <see cref="CreateStoreAsync"/>'s (its own connections or file handle), as a second
    /// process has, with what to dispose after; by default <paramref name="first"/> itself (an engine of one process).
    /// </summary>
    protected virtual ValueTask<(IDeadLetterStore Store, IAsyncDisposable? Owner)> OpenSecondStoreAsync(IDeadLetterStore first) =>
        ValueTask.FromResult<(IDeadLetterStore, IAsyncDisposable?)>((first, null));

    /// <summary>
    /// Drives the store and a <see cref="DeadLetterManager"/> over it with a seeded random sequence of adds (endpoints, types,
    /// fingerprints, failure times, headers, bodies, a publish's topic, a stream processor's origin), adds of held ids, gets,
    /// lists and counts with every filter and paging, paging through the manager while adds and deletes land between pages,
    /// deletes, deletes of many, recorded retry failures, retries of one and of all (through a transport that fails some
    /// destinations), purges, trims and clock moves, and checks each outcome against a plain reference model of the port's
    /// and the manager's documented rules: every retried letter sent once, as its original envelope, and gone.
    /// </summary>
    [Theory]
    [MemberData(nameof(DeadLetterModelSeeds))]
    public async Task Model_RandomOperationsThroughTheStoreAndTheManager_MatchTheReferenceModel(int seed)
    {
        var run = new DeadLetterModelRun(await CreateStoreAsync(), seed);
        for (var op = 0; op < DeadLetterModelOperations; op++)
        {
            await run.StepAsync(op);
        }

        await run.CheckEverythingAsync(DeadLetterModelOperations);
        run.AssertCoverage();
    }

    /// <summary>
    /// Two retry-alls of one manager and one of a second manager over a second store on the same database, while adds land
    /// (some failed before the retry-alls began, some after): each manager sends each letter at most once, and reports as
    /// succeeded exactly what it sent; every letter present when they began is sent (by one manager or, as documented for
    /// two processes, by both) and gone; a late one that failed before is sent or kept, never both; a later one is kept.
    /// </summary>
    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public async Task Model_RetryAllRacingAddsAndAnotherRetryAll_SendsEachAtMostOncePerManager_AndLosesNone(int seed)
    {
        var random = new Random(seed);
        var first = await CreateStoreAsync();
        var (second, owner) = await OpenSecondStoreAsync(first);
        try
        {
            var endpoint = UniqueEndpoint();
            var now = BaseTime.AddHours(1);
            var clock = new FakeTimeProvider(now);
            var present = Enumerable.Range(0, 40 + random.Next(40)).Select(_ => NewDeadLetter(endpoint, failedAt: BaseTime.AddMilliseconds(random.Next(3_600_000)))).ToList();
            var lateBefore = Enumerable.Range(0, 15).Select(_ => NewDeadLetter(endpoint, failedAt: BaseTime.AddMilliseconds(random.Next(3_600_000)))).ToList();
            var lateAfter = Enumerable.Range(0, 15).Select(_ => NewDeadLetter(endpoint, failedAt: now.AddMilliseconds(1 + random.Next(600_000)))).ToList();
            var late = lateBefore.Concat(lateAfter).OrderBy(_ => random.Next()).ToList();
            foreach (var deadLetter in present)
            {
                Assert.True(await first.AddAsync(deadLetter));
            }

            var firstTransport = new RecordingTransport(new InMemoryTransport(InMemoryTransportOptions.Default, clock));
            var secondTransport = new RecordingTransport(new InMemoryTransport(InMemoryTransportOptions.Default, clock));
            var firstManager = new DeadLetterManager(first, firstTransport, clock);
            var secondManager = new DeadLetterManager(second, secondTransport, clock);
            var query = new DeadLetterQuery { Endpoint = endpoint, Limit = 1 + random.Next(10) };
            var start = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);

            async Task<DeadLetterRetryResult> RetryAllAsync(DeadLetterManager manager)
            {
                await start.Task;
                return await manager.RetryAllAsync(query);
            }

            async Task AddLateAsync()
            {
                await start.Task;
                for (var i = 0; i < late.Count; i++)
                {
                    Assert.True(await (i % 2 == 0 ? first : second).AddAsync(late[i]));
                }
            }

            var firstA = Task.Run(() => RetryAllAsync(firstManager));
            var firstB = Task.Run(() => RetryAllAsync(firstManager));
            var other = Task.Run(() => RetryAllAsync(secondManager));
            var adds = Task.Run(AddLateAsync);
            start.SetResult();
            await Task.WhenAll(firstA, firstB, other, adds).WaitAsync(TimeSpan.FromSeconds(60));
            var (resultA, resultB, resultOther) = (await firstA, await firstB, await other);

            var kept = (await first.ListAsync(new DeadLetterQuery { Endpoint = endpoint, Limit = DeadLetterQuery.MaxLimit })).Select(d => d.Id).ToHashSet();
            var sentFirst = firstTransport.Sent.Select(s => s.Envelope.MessageId).ToList();
            var sentSecond = secondTransport.Sent.Select(s => s.Envelope.MessageId).ToList();
            var context = string.Create(
                CultureInfo.InvariantCulture,
                $"seed {seed}, {present.Count} present, batch {query.Limit}: first manager {resultA} and {resultB} sent {sentFirst.Count}, second {resultOther} sent {sentSecond.Count}, {kept.Count} kept");

            Assert.True(sentFirst.Count == sentFirst.Distinct().Count(), $"{context}: the first manager sent a letter twice");
            Assert.True(sentSecond.Count == sentSecond.Distinct().Count(), $"{context}: the second manager sent a letter twice");
            Assert.True(resultA.Succeeded + resultB.Succeeded == sentFirst.Count && resultOther.Succeeded == sentSecond.Count, $"{context}: succeeded counts differ from the sends");
            Assert.True(new[] { resultA, resultB, resultOther }.All(r => r.Failed == 0 && r.Refused == 0), $"{context}: a retry failed or was refused");
            Assert.All(firstTransport.Sent.Concat(secondTransport.Sent), s => Assert.Equal(endpoint, s.Destination));
            var sent = sentFirst.Concat(sentSecond).ToHashSet();
            foreach (var deadLetter in present)
            {
                Assert.True(!kept.Contains(deadLetter.Id) && sent.Contains(deadLetter.Envelope.MessageId), $"{context}: letter {deadLetter.Id} present at the start was kept or not sent");
            }

            foreach (var deadLetter in lateBefore)
            {
                Assert.True(kept.Contains(deadLetter.Id) != sent.Contains(deadLetter.Envelope.MessageId), $"{context}: late letter {deadLetter.Id} (failed before) was both sent and kept, or lost");
            }

            foreach (var deadLetter in lateAfter)
            {
                Assert.True(kept.Contains(deadLetter.Id) && !sent.Contains(deadLetter.Envelope.MessageId), $"{context}: late letter {deadLetter.Id} (failed after the retry-alls began) was sent or lost");
            }

            Assert.True(kept.IsSubsetOf(late.Select(d => d.Id)), $"{context}: a letter kept is none of the late ones");
            Assert.Equal(kept.Count, await second.CountAsync(new DeadLetterQuery { Endpoint = endpoint }));
        }
        finally
        {
            if (owner is not null)
            {
                await owner.DisposeAsync();
            }
        }
    }

    private sealed class DeadLetterModelRun
    {
        private static readonly string[] Fingerprints = ["fp-a", "fp-b", "fp-\u00e9"];
        private static readonly string[] Texts = ["", "plain", "gr\u00fc\u00dfe, \u6771\u4eac", "tab\there", "quote ' \" \\", "\U0001F600 emoji", "{\"json\":1}"];
        private static readonly int[] Limits = [1, 2, 3, 5, 10, 100, DeadLetterQuery.MaxLimit];

        private readonly IDeadLetterStore _store;
        private readonly int _seed;
        private readonly Random _random;
        private readonly FakeTimeProvider _clock = new(BaseTime.AddMinutes(30));
        private readonly RecordingTransport _transport;
        private readonly DeadLetterManager _manager;
        private readonly string[] _endpoints;
        private readonly string[] _types;
        private readonly Dictionary<string, string> _topics;
        private readonly HashSet<string> _failing = new(StringComparer.Ordinal);

        // The reference model: what the store holds of this run, in id order; the ids it held once; the envelope each letter's
        // message had before it was dead-lettered (without the headers the dead letter added), as a retry must send it.
        private readonly SortedDictionary<Guid, DeadLetter> _model = [];
        private readonly List<Guid> _removed = [];
        private readonly Dictionary<Guid, Envelope> _originals = [];
        private readonly List<string> _log = [];
        private readonly Dictionary<string, int> _seen = new(StringComparer.Ordinal);
        private int _sentSeen;
        private string _doing = "";

        public DeadLetterModelRun(IDeadLetterStore store, int seed)
        {
            _store = store;
            _seed = seed;
            _random = new Random(seed);
            var suffix = Guid.NewGuid().ToString("N")[..12];
            _endpoints = [$"dl-model-{suffix}-0", $"dl-model-{suffix}-1", $"dl-model-{suffix}-\u00e9"];
            _types = [$"type-{suffix}-a", $"type-{suffix}-b"];
            _topics = _endpoints.ToDictionary(e => e, e => "topic-" + e, StringComparer.Ordinal);
            _transport = new RecordingTransport(new InMemoryTransport(InMemoryTransportOptions.Default, _clock))
            {
                FailSend = (destination, _) => _failing.Contains(destination) ? new InvalidOperationException("broker down at " + destination) : null,
            };
            _manager = new DeadLetterManager(store, _transport, _clock);

            // One destination fails from the start; the run switches others on and off.
            _failing.Add(_endpoints[seed % _endpoints.Length]);
        }

        public async Task StepAsync(int op)
        {
            var roll = _random.Next(100);
            if (roll < 20 || _model.Count == 0)
            {
                await AddNewAsync(op);
            }
            else if (roll < 24)
            {
                await AddHeldAsync(op);
            }
            else if (roll < 32)
            {
                await GetAsync(op, PickId());
            }
            else if (roll < 44)
            {
                await ListAsync(op, RandomQuery(withPaging: true));
            }
            else if (roll < 51)
            {
                await CountAsync(op, RandomQuery(withPaging: true));
            }
            else if (roll < 56)
            {
                await PageWhileChangingAsync(op);
            }
            else if (roll < 61)
            {
                await DeleteAsync(op, PickId());
            }
            else if (roll < 64)
            {
                await DeleteManyAsync(op, RandomQuery(withPaging: true));
            }
            else if (roll < 68)
            {
                await RecordRetryFailureAsync(op, _random.Next(4) > 0 ? _model.Keys.ElementAt(_random.Next(_model.Count)) : PickId());
            }
            else if (roll < 78)
            {
                // A stream processor's now and then, whose retry is refused (they are one in eight of the adds).
                var refused = _model.Values.Where(d => d.Envelope.GetHeader(HeaderNames.DeadLetterOrigin) is not null).ToList();
                await RetryAsync(op, refused.Count > 0 && _random.Next(4) == 0 ? Pick(refused).Id : PickId());
            }
            else if (roll < 83)
            {
                await RetryAllAsync(op, RandomQuery(withPaging: _random.Next(2) == 0));
            }
            else if (roll < 88)
            {
                await PurgeAsync(op, RandomQuery(withPaging: _random.Next(2) == 0));
            }
            else if (roll < 91)
            {
                await TrimAsync(op);
            }
            else if (roll < 95)
            {
                var destinations = _endpoints.Concat(_topics.Values).ToArray();
                var destination = destinations[_random.Next(destinations.Length)];
                var failing = _failing.Add(destination) || !_failing.Remove(destination);
                _log.Add($"op {op}: sends to {destination} {(failing ? "fail" : "work again")}");
            }
            else
            {
                var by = TimeSpan.FromMilliseconds(_random.Next(1, 600_000));
                _clock.Advance(by);
                _log.Add($"op {op}: clock advanced by {by} to {_clock.GetUtcNow():O}");
            }
        }

        // At the end: every endpoint and type listed in full and counted, every held id read, and some gone ones.
        public async Task CheckEverythingAsync(int op)
        {
            foreach (var endpoint in _endpoints)
            {
                await ListAsync(op, new DeadLetterQuery { Endpoint = endpoint, Limit = DeadLetterQuery.MaxLimit });
                await CountAsync(op, new DeadLetterQuery { Endpoint = endpoint });
            }

            foreach (var type in _types)
            {
                await ListAsync(op, new DeadLetterQuery { MessageType = type, Limit = DeadLetterQuery.MaxLimit });
                await CountAsync(op, new DeadLetterQuery { MessageType = type });
            }

            foreach (var id in _model.Keys.Concat(_removed.Take(20)).ToList())
            {
                await GetAsync(op, id);
            }

            CheckNothingElseSent(Context(op, "the end"));
        }

        // A run that never met one of the outcomes proves nothing about it: the seeds must reach them all.
        public void AssertCoverage()
        {
            string[] kinds = ["added", "add of a held id", "get", "get of a gone id", "listed", "counted", "paged while changing", "deleted", "deleted many",
                "retry failure recorded", "Retried", "Failed", "Refused", "NotFound", "retry-all", "purged", "trimmed"];
            var missing = kinds.Where(k => _seen.GetValueOrDefault(k) == 0).ToArray();
            Check(missing.Length == 0, $"seed {_seed}", $"the run never met {string.Join(", ", missing)} (met {string.Join(", ", _seen.Select(p => $"{p.Key} {p.Value}"))})");
        }

        private static void Check(bool condition, string context, string difference)
        {
            if (!condition)
            {
                Assert.Fail($"{context}: {difference}");
            }
        }

        private void Saw(string kind) => _seen[kind] = _seen.GetValueOrDefault(kind) + 1;

        private T Pick<T>(IReadOnlyList<T> items) => items[_random.Next(items.Count)];

        // A held id mostly, else one that is gone or one never added.
        private Guid PickId()
        {
            var roll = _random.Next(10);
            return roll < 7 && _model.Count > 0 ? _model.Keys.ElementAt(_random.Next(_model.Count))
                : roll < 9 && _removed.Count > 0 ? Pick(_removed)
                : Guid.CreateVersion7(BaseTime.AddMinutes(_random.Next(60)));
        }

        private DateTimeOffset RandomTime() => BaseTime.AddMilliseconds(_random.Next(0, 90 * 60_000));

        // Filters over this run's letters only (an endpoint or a type of its own: the database may be shared), the others at random.
        private DeadLetterQuery RandomQuery(bool withPaging)
        {
            var scope = _random.Next(3);
            var query = new DeadLetterQuery
            {
                Endpoint = scope != 1 ? Pick(_endpoints) : null,
                MessageType = scope != 0 ? Pick(_types) : null,
                Fingerprint = _random.Next(4) == 0 ? Pick(Fingerprints) : null,
                FailedFrom = _random.Next(4) == 0 ? RandomTime() : null,
                FailedBefore = _random.Next(4) == 0 ? RandomTime() : null,
                Limit = Pick(Limits),
            };
            return withPaging && _random.Next(3) == 0 ? query with { After = PickId() } : query;
        }

        private static string Describe(DeadLetterQuery q) => string.Create(
            CultureInfo.InvariantCulture,
            $"[endpoint {q.Endpoint ?? "-"}, type {q.MessageType ?? "-"}, fp {q.Fingerprint ?? "-"}, from {q.FailedFrom?.ToString("HH:mm:ss.fff", CultureInfo.InvariantCulture) ?? "-"}, before {q.FailedBefore?.ToString("HH:mm:ss.fff", CultureInfo.InvariantCulture) ?? "-"}, after {Short(q.After)}, limit {q.Limit}]");

        private static string Short(Guid? id) => id is { } g ? g.ToString("N")[^6..] : "-";

        // The reference filter, written out here rather than taken from DeadLetterQuery.Matches.
        private static bool Matches(DeadLetterQuery q, DeadLetter d, bool withAfter = true) =>
            (q.Endpoint is null || q.Endpoint == d.Endpoint)
            && (q.MessageType is null || q.MessageType == d.Envelope.MessageType)
            && (q.Fingerprint is null || q.Fingerprint == d.Fingerprint)
            && (q.FailedFrom is null || d.LastFailureTime >= q.FailedFrom)
            && (q.FailedBefore is null || d.LastFailureTime < q.FailedBefore)
            && (!withAfter || q.After is null || d.Id.CompareTo(q.After.Value) > 0);

        private List<DeadLetter> Expected(DeadLetterQuery q) => [.. _model.Values.Where(d => Matches(q, d)).Take(q.Limit)];

        private DeadLetter NewLetter(string? endpoint = null, string? type = null)
        {
            var failed = RandomTime();
            var headers = new Dictionary<string, string>(StringComparer.Ordinal);
            for (var i = _random.Next(4); i > 0; i--)
            {
                headers["x-" + Pick(Texts.Skip(1).ToArray()).Length.ToString(CultureInfo.InvariantCulture) + "-" + _random.Next(5).ToString(CultureInfo.InvariantCulture)] = Pick(Texts);
            }

            var body = new byte[Pick([0, 1, 17, 64, 300])];
            _random.NextBytes(body);
            var original = new Envelope
            {
                MessageId = Guid.CreateVersion7(failed.AddMinutes(-1)),
                MessageType = type ?? Pick(_types),
                SchemaVersion = 1 + _random.Next(3),
                Time = failed.AddSeconds(-_random.Next(1, 600)),
                CorrelationId = _random.Next(2) == 0 ? null : "corr-" + _random.Next(100).ToString(CultureInfo.InvariantCulture),
                CausationId = _random.Next(2) == 0 ? null : Pick(Texts),
                UserId = _random.Next(3) == 0 ? null : "ann",
                PartitionKey = _random.Next(2) == 0 ? null : "key-" + _random.Next(5).ToString(CultureInfo.InvariantCulture),
                ContentType = "application/json",
                Headers = headers,
                Body = body,
                DeliveryAttempt = 1 + _random.Next(6),
            };
            endpoint ??= Pick(_endpoints);
            var kind = _random.Next(8);
            var envelope = kind switch
            {
                // An outbox topic row: a retry publishes it to the topic. A stream processor's: a retry is refused.
                0 => original.WithHeader(HeaderNames.DeadLetterTopic, _topics[endpoint]),
                1 => original.WithHeader(HeaderNames.DeadLetterOrigin, nameof(DeadLetterOrigin.StreamProcessor)),
                _ => original,
            };
            var deadLetter = new DeadLetter
            {
                Id = Guid.CreateVersion7(failed),
                Envelope = envelope,
                Endpoint = endpoint,
                Cause = (DeadLetterCause)_random.Next(Enum.GetValues<DeadLetterCause>().Length),
                ErrorType = "System.InvalidOperationException",
                ErrorMessage = "failed: " + Pick(Texts),
                StackTrace = _random.Next(3) == 0 ? null : "   at Orders.Handle()",
                Fingerprint = Pick(Fingerprints),
                FirstFailureTime = failed.AddSeconds(-_random.Next(0, 120)),
                LastFailureTime = failed,
                AttemptCount = 1 + _random.Next(6),
                RetryCount = _random.Next(5) == 0 ? 1 : 0,
            };
            _originals[deadLetter.Id] = original with { DeliveryAttempt = 0 };
            return deadLetter.RetryCount == 0 ? deadLetter : deadLetter with { LastRetryError = "earlier: " + Pick(Texts), LastRetryTime = failed.AddMinutes(1) };
        }

        private async Task<DeadLetter> AddNewAsync(int op, string? endpoint = null, string? type = null)
        {
            var deadLetter = NewLetter(endpoint, type);
            var context = Context(op, $"add {Short(deadLetter.Id)} to {deadLetter.Endpoint}, {deadLetter.Envelope.MessageType}, failed {deadLetter.LastFailureTime:HH:mm:ss.fff}");
            Check(await _store.AddAsync(deadLetter), context, "the add of a new id returned false");
            _model[deadLetter.Id] = deadLetter;
            Saw("added");
            _log.Add(_doing);
            return deadLetter;
        }

        private async Task AddHeldAsync(int op)
        {
            var held = _model.Values.ElementAt(_random.Next(_model.Count));
            var context = Context(op, $"add of held id {Short(held.Id)} with another error and endpoint");
            Check(!await _store.AddAsync(held with { ErrorMessage = "a redelivered write", Endpoint = Pick(_endpoints) }), context, "the add of a held id returned true");
            Saw("add of a held id");
            _log.Add(_doing);
            await GetAsync(op, held.Id);
        }

        private async Task GetAsync(int op, Guid id)
        {
            var context = Context(op, $"get {Short(id)}");
            var read = await _store.GetAsync(id);
            if (_model.TryGetValue(id, out var expected))
            {
                Check(read is not null, context, "a held letter was not found");
                CheckSame(context, expected, read!);
                Saw("get");
            }
            else
            {
                Check(read is null, context, $"a letter that is gone (or never was) was found, of {read?.Endpoint}");
                Saw("get of a gone id");
            }

            _log.Add(_doing);
        }

        private async Task ListAsync(int op, DeadLetterQuery query)
        {
            var context = Context(op, "list " + Describe(query));
            var actual = await _store.ListAsync(query);
            CheckList(context, Expected(query), actual);
            Saw("listed");
            _log.Add($"{_doing} -> {actual.Count}");
        }

        private async Task CountAsync(int op, DeadLetterQuery query)
        {
            var context = Context(op, "count " + Describe(query));
            var expected = _model.Values.Count(d => Matches(query, d));
            var actual = await _store.CountAsync(query);
            Check(expected == actual, context, $"counted {actual}, the model holds {expected}");
            Saw("counted");
            _log.Add($"{_doing} -> {actual}");
        }

        // Pages through the manager while letters of the query's scope are added and deleted between pages: each page is
        // what the model holds after the previous one, no id comes twice, and every letter held throughout is met.
        private async Task PageWhileChangingAsync(int op)
        {
            var query = RandomQuery(withPaging: false) with { Limit = Pick([1, 2, 3, 5]) };
            var throughout = _model.Values.Where(d => Matches(query, d)).Select(d => d.Id).ToHashSet();
            var met = new List<Guid>();
            DeadLetterQuery? page = query;
            var changes = 6;
            while (page is not null)
            {
                var context = Context(op, $"page {Describe(page)} (met {met.Count})");
                var result = await _manager.ListAsync(page);
                var expected = Expected(page);
                CheckList(context, expected, result.Items);
                Check((result.Next is null) == (result.Items.Count < page.Limit), context, $"the next page is {(result.Next is null ? "null" : Describe(result.Next))} after {result.Items.Count} of {page.Limit}");
                Check(result.Next is null || result.Next == page with { After = result.Items[^1].Id }, context, $"the next page is {(result.Next is null ? "null" : Describe(result.Next))}");
                met.AddRange(result.Items.Select(d => d.Id));
                page = result.Next;
                while (changes > 0 && _random.Next(2) == 0)
                {
                    changes--;
                    if (_random.Next(3) == 0 && _model.Count > 0)
                    {
                        var gone = _model.Keys.ElementAt(_random.Next(_model.Count));
                        throughout.Remove(gone);
                        await DeleteAsync(op, gone);
                    }
                    else
                    {
                        await AddNewAsync(op, query.Endpoint, query.MessageType);
                    }
                }
            }

            var end = Context(op, $"paged {Describe(query)}");
            Check(met.Count == met.Distinct().Count(), end, "an id came on two pages");
            Check(met.Zip(met.Skip(1)).All(p => p.First.CompareTo(p.Second) < 0), end, "the pages did not go in id order");
            var missed = throughout.Where(id => _model.ContainsKey(id) && !met.Contains(id)).ToList();
            Check(missed.Count == 0, end, $"letters held throughout were on no page: {string.Join(", ", missed.Select(id => Short(id)))}");
            Saw("paged while changing");
            _log.Add($"{_doing} -> {met.Count} on {(met.Count / query.Limit) + 1} pages");
        }

        private async Task DeleteAsync(int op, Guid id)
        {
            var context = Context(op, $"delete {Short(id)}");
            var deleted = await _store.DeleteAsync(id);
            Check(deleted == _model.ContainsKey(id), context, $"the delete returned {deleted}, the model {(_model.ContainsKey(id) ? "holds" : "does not hold")} it");
            Remove(id);
            Saw("deleted");
            _log.Add($"{_doing} -> {deleted}");
        }

        private async Task DeleteManyAsync(int op, DeadLetterQuery query)
        {
            var context = Context(op, "delete many " + Describe(query));
            var expected = Expected(query);
            var deleted = await _store.DeleteManyAsync(query);
            Check(deleted == expected.Count, context, $"deleted {deleted}, the model has {expected.Count} to delete");
            expected.ForEach(d => Remove(d.Id));
            Saw("deleted many");
            _log.Add($"{_doing} -> {deleted}");
            await ListAsync(op, query with { After = null, Limit = DeadLetterQuery.MaxLimit });
        }

        private async Task RecordRetryFailureAsync(int op, Guid id)
        {
            var error = "retry failed: " + Pick(Texts);
            var at = _clock.GetUtcNow().AddMilliseconds(_random.Next(1000));
            var context = Context(op, $"record a retry failure of {Short(id)}");
            var recorded = await _store.RecordRetryFailureAsync(id, error, at);
            Check(recorded == _model.ContainsKey(id), context, $"it returned {recorded}, the model {(_model.ContainsKey(id) ? "holds" : "does not hold")} it");
            if (_model.TryGetValue(id, out var held))
            {
                _model[id] = held with { RetryCount = held.RetryCount + 1, LastRetryError = error, LastRetryTime = at };
                Saw("retry failure recorded");
            }

            _log.Add($"{_doing} -> {recorded}");
            await GetAsync(op, id);
        }

        // What a retry of the held letter does: refused (its origin cannot take it back), failed (its destination fails), or retried.
        private DeadLetterRetryOutcome Foresee(DeadLetter deadLetter) =>
            deadLetter.Envelope.GetHeader(HeaderNames.DeadLetterOrigin) is not null ? DeadLetterRetryOutcome.Refused
            : _failing.Contains(Destination(deadLetter)) ? DeadLetterRetryOutcome.Failed
            : DeadLetterRetryOutcome.Retried;

        private static string Destination(DeadLetter deadLetter) => deadLetter.Envelope.GetHeader(HeaderNames.DeadLetterTopic) ?? deadLetter.Endpoint;

        private async Task RetryAsync(int op, Guid id)
        {
            var context = Context(op, $"retry {Short(id)}");
            var expected = _model.TryGetValue(id, out var held) ? Foresee(held) : DeadLetterRetryOutcome.NotFound;
            var outcome = await _manager.RetryAsync(id);
            Check(outcome == expected, context, $"the outcome is {outcome}, the model expects {expected}");
            List<DeadLetter> retried = held is not null && outcome == DeadLetterRetryOutcome.Retried ? [held] : [];
            CheckSent(context, retried);
            if (held is not null)
            {
                await ApplyRetryAsync(context, held, outcome);
            }

            if (held is null)
            {
                Saw(outcome.ToString());
            }

            _log.Add($"{_doing} -> {outcome}");
            await GetAsync(op, id);
        }

        private async Task ApplyRetryAsync(string context, DeadLetter held, DeadLetterRetryOutcome outcome)
        {
            Saw(outcome.ToString());
            switch (outcome)
            {
                case DeadLetterRetryOutcome.Retried:
                    Remove(held.Id);
                    break;
                case DeadLetterRetryOutcome.Failed:
                    _model[held.Id] = held with
                    {
                        RetryCount = held.RetryCount + 1,
                        LastRetryError = $"System.InvalidOperationException: broker down at {Destination(held)}",
                        LastRetryTime = _clock.GetUtcNow(),
                    };
                    break;
                case DeadLetterRetryOutcome.Refused:
                    // The reason's words are the manager's own; the model takes them once it has checked they name the letter.
                    var read = await _store.GetAsync(held.Id);
                    Check(read?.LastRetryError?.Contains(held.Id.ToString(), StringComparison.Ordinal) == true, context, $"the refused letter's last retry error is '{read?.LastRetryError}'");
                    _model[held.Id] = held with { RetryCount = held.RetryCount + 1, LastRetryError = read!.LastRetryError, LastRetryTime = _clock.GetUtcNow() };
                    break;
            }
        }

        // Every letter matching the query's filters (its paging aside) that failed before the retry-all began, in id order.
        private async Task RetryAllAsync(int op, DeadLetterQuery query)
        {
            var context = Context(op, "retry all " + Describe(query));
            var cutoff = _clock.GetUtcNow().AddMilliseconds(1);
            var taken = _model.Values.Where(d => Matches(query, d, withAfter: false) && d.LastFailureTime < cutoff).ToList();
            var outcomes = taken.Select(d => (Letter: d, Outcome: Foresee(d))).ToList();
            var expected = new DeadLetterRetryResult(outcomes.Count(o => o.Outcome == DeadLetterRetryOutcome.Retried), outcomes.Count(o => o.Outcome == DeadLetterRetryOutcome.Failed))
            {
                Refused = outcomes.Count(o => o.Outcome == DeadLetterRetryOutcome.Refused),
            };
            var result = await _manager.RetryAllAsync(query);
            Check(result == expected, context, $"the result is {result}, the model expects {expected}");
            CheckSent(context, [.. outcomes.Where(o => o.Outcome == DeadLetterRetryOutcome.Retried).Select(o => o.Letter)]);
            foreach (var (letter, outcome) in outcomes)
            {
                await ApplyRetryAsync(context, letter, outcome);
            }

            Saw("retry-all");
            _log.Add($"{_doing} -> {result}");
            await ListAsync(op, query with { After = null, Limit = DeadLetterQuery.MaxLimit });
        }

        private async Task PurgeAsync(int op, DeadLetterQuery query)
        {
            DateTimeOffset? olderThan = _random.Next(3) == 0 ? RandomTime() : null;
            var context = Context(op, $"purge {Describe(query)} older than {olderThan?.ToString("HH:mm:ss.fff", CultureInfo.InvariantCulture) ?? "-"}");
            var cutoff = _clock.GetUtcNow().AddMilliseconds(1);
            if (olderThan < cutoff)
            {
                cutoff = olderThan.Value;
            }

            var expected = _model.Values.Where(d => Matches(query, d, withAfter: false) && d.LastFailureTime < cutoff).ToList();
            var purged = await _manager.PurgeAsync(query, olderThan);
            Check(purged == expected.Count, context, $"purged {purged}, the model has {expected.Count} to purge");
            expected.ForEach(d => Remove(d.Id));
            Saw("purged");
            _log.Add($"{_doing} -> {purged}");
            await ListAsync(op, query with { After = null, Limit = DeadLetterQuery.MaxLimit });
            await CountAsync(op, new DeadLetterQuery { Endpoint = query.Endpoint ?? Pick(_endpoints) });
        }

        private async Task TrimAsync(int op)
        {
            var endpoint = Pick(_endpoints);
            TimeSpan? maxAge = _random.Next(2) == 0 ? TimeSpan.FromMilliseconds(_random.Next(1, 60 * 60_000)) : null;
            int? maxCount = maxAge is null || _random.Next(2) == 0 ? _random.Next(0, 12) : null;
            var context = Context(op, $"trim {endpoint} to age {maxAge?.ToString() ?? "-"}, count {maxCount?.ToString(CultureInfo.InvariantCulture) ?? "-"}");
            var expected = new List<Guid>();
            if (maxAge is { } age)
            {
                var before = _clock.GetUtcNow() - age;
                expected.AddRange(_model.Values.Where(d => d.Endpoint == endpoint && d.LastFailureTime < before).Select(d => d.Id));
            }

            if (maxCount is { } max)
            {
                var left = _model.Values.Where(d => d.Endpoint == endpoint && !expected.Contains(d.Id)).ToList();
                expected.AddRange(left.Take(Math.Max(0, left.Count - max)).Select(d => d.Id));
            }

            var trimmed = await _manager.TrimAsync(endpoint, maxAge, maxCount);
            Check(trimmed == expected.Count, context, $"trimmed {trimmed}, the model has {expected.Count} to trim");
            expected.ForEach(Remove);
            Saw("trimmed");
            _log.Add($"{_doing} -> {trimmed}");
            await ListAsync(op, new DeadLetterQuery { Endpoint = endpoint, Limit = DeadLetterQuery.MaxLimit });
        }

        private void Remove(Guid id)
        {
            if (_model.Remove(id))
            {
                _removed.Add(id);
            }
        }

        // The sends since the last check are exactly these letters', in id order, once each: the original envelope (every
        // attribute, headers and body) with a fresh delivery count and the retry's id, to the endpoint or published to the topic.
        private void CheckSent(string context, List<DeadLetter> retried)
        {
            var sent = _transport.Sent.Skip(_sentSeen).ToList();
            var published = _transport.Published.Select(p => p.Envelope.Headers.GetValueOrDefault(RetryHeader)).ToHashSet(StringComparer.Ordinal);
            _sentSeen += sent.Count;
            Check(sent.Count == retried.Count, context, $"{sent.Count} sends, the model expects {retried.Count} ({string.Join(", ", sent.Select(s => $"{Short(s.Envelope.MessageId)} to {s.Destination}"))})");
            for (var i = 0; i < sent.Count; i++)
            {
                var (destination, envelope) = sent[i];
                var letter = retried[i];
                var what = $"send {i} ({Short(letter.Id)})";
                Check(destination == Destination(letter), context, $"{what} went to {destination}, not {Destination(letter)}");
                var isPublish = letter.Envelope.GetHeader(HeaderNames.DeadLetterTopic) is not null;
                Check(isPublish == published.Contains(envelope.Headers.GetValueOrDefault(RetryHeader) ?? ""), context, $"{what} was {(isPublish ? "sent, not published" : "published, not sent")}");
                var retry = envelope.Headers.GetValueOrDefault(RetryHeader);
                Check(Guid.TryParse(retry, out var retryId) && retryId.Version == 7, context, $"{what} carries '{retry}' as its retry id");
                var expected = _originals[letter.Id];
                expected = expected with { Headers = new Dictionary<string, string>(expected.Headers, StringComparer.Ordinal) { [RetryHeader] = retry! } };
                Check(EnvelopeDifference(expected, envelope) is null, context, $"{what}: {EnvelopeDifference(expected, envelope)}");
            }
        }

        private void CheckNothingElseSent(string context) =>
            Check(_transport.Sent.Count == _sentSeen, context, $"{_transport.Sent.Count - _sentSeen} sends nothing asked for");

        private static void CheckList(string context, List<DeadLetter> expected, IReadOnlyList<DeadLetter> actual)
        {
            for (var i = 0; i < Math.Max(expected.Count, actual.Count); i++)
            {
                var want = i < expected.Count ? Short(expected[i].Id) : "nothing";
                var got = i < actual.Count ? Short(actual[i].Id) : "nothing";
                Check(want == got, context, $"item {i}: expected {want}, the store returned {got} (expected {expected.Count}: {string.Join(",", expected.Select(d => Short(d.Id)))}; got {actual.Count}: {string.Join(",", actual.Select(d => Short(d.Id)))})");
                CheckSame($"{context}, item {i}", expected[i], actual[i]);
            }
        }

        private static void CheckSame(string context, DeadLetter expected, DeadLetter actual)
        {
            string? difference =
                expected.Id != actual.Id ? $"id {actual.Id}" :
                expected.Endpoint != actual.Endpoint ? $"endpoint {actual.Endpoint}" :
                expected.Cause != actual.Cause ? $"cause {actual.Cause}" :
                expected.ErrorType != actual.ErrorType ? $"error type {actual.ErrorType}" :
                expected.ErrorMessage != actual.ErrorMessage ? $"error '{actual.ErrorMessage}'" :
                expected.StackTrace != actual.StackTrace ? $"stack trace '{actual.StackTrace}'" :
                expected.Fingerprint != actual.Fingerprint ? $"fingerprint {actual.Fingerprint}" :
                expected.FirstFailureTime != actual.FirstFailureTime ? $"first failure {actual.FirstFailureTime:O}" :
                expected.LastFailureTime != actual.LastFailureTime ? $"last failure {actual.LastFailureTime:O}" :
                expected.AttemptCount != actual.AttemptCount ? $"attempts {actual.AttemptCount}" :
                expected.RetryCount != actual.RetryCount ? $"retry count {actual.RetryCount}, expected {expected.RetryCount}" :
                expected.LastRetryError != actual.LastRetryError ? $"last retry error '{actual.LastRetryError}', expected '{expected.LastRetryError}'" :
                expected.LastRetryTime != actual.LastRetryTime ? $"last retry time {actual.LastRetryTime:O}, expected {expected.LastRetryTime:O}" :
                EnvelopeDifference(expected.Envelope, actual.Envelope);
            Check(difference is null, context, $"letter {Short(expected.Id)} differs: {difference}");
        }

        private static string? EnvelopeDifference(Envelope expected, Envelope actual) =>
            expected.MessageId != actual.MessageId ? $"message id {actual.MessageId}" :
            expected.MessageType != actual.MessageType ? $"message type {actual.MessageType}" :
            expected.SchemaVersion != actual.SchemaVersion ? $"schema version {actual.SchemaVersion}" :
            expected.Time != actual.Time ? $"time {actual.Time:O}, expected {expected.Time:O}" :
            expected.CorrelationId != actual.CorrelationId ? $"correlation id {actual.CorrelationId}" :
            expected.CausationId != actual.CausationId ? $"causation id {actual.CausationId}" :
            expected.UserId != actual.UserId ? $"user id {actual.UserId}" :
            expected.PartitionKey != actual.PartitionKey ? $"partition key {actual.PartitionKey}" :
            expected.ContentType != actual.ContentType ? $"content type {actual.ContentType}" :
            Headers(expected) != Headers(actual) ? $"headers {Headers(actual)}, expected {Headers(expected)}" :
            !expected.Body.Span.SequenceEqual(actual.Body.Span) ? $"a body of {actual.Body.Length} bytes differs from the {expected.Body.Length} expected" :
            expected.DeliveryAttempt != actual.DeliveryAttempt ? $"delivery attempt {actual.DeliveryAttempt}, expected {expected.DeliveryAttempt}" :
            null;

        private static string Headers(Envelope envelope)
        {
            var text = new StringBuilder();
            foreach (var (key, value) in envelope.Headers.OrderBy(h => h.Key, StringComparer.Ordinal))
            {
                text.Append(key).Append('=').Append(value).Append(';');
            }

            return text.ToString();
        }

        // The seed, the operation and the last ones before it, to start a failure's message (the first difference follows).
        private string Context(int op, string what)
        {
            _doing = $"op {op}: {what}";
            return string.Create(CultureInfo.InvariantCulture, $"seed {_seed}, {_doing}; the operations before it:{Environment.NewLine}{string.Join(Environment.NewLine, _log.TakeLast(15))}{Environment.NewLine}first difference");
        }
    }
}
