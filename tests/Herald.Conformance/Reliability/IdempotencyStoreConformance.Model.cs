using System.Globalization;
using System.Text;
using Herald.Reliability.Idempotency;
using Microsoft.Extensions.Time.Testing;
using Xunit;

namespace Herald.Conformance.Reliability;

public abstract partial class IdempotencyStoreConformance
{
    /// <summary>Operations each seed of the idempotency model test runs; lower it for a slow store.</summary>
    protected virtual int IdempotencyModelOperations => 200;

    /// <summary>The seeds of the idempotency model tests: fixed, so a failure names one that reproduces it.</summary>
    public static TheoryData<int> IdempotencyModelSeeds => [1, 2, 3, 4, 5, 6];

    /// <summary>
    /// A second store on the database or server of <see cref="CreateStoreAsync"/>'s (its own connections or file handle), as
    /// a second process has, on the same clock, with what to dispose after; by default <paramref name="first"/> itself (an
    /// engine of one process).
    /// </summary>
    protected virtual ValueTask<(IIdempotencyStore Store, IAsyncDisposable? Owner)> OpenSecondStoreAsync(IIdempotencyStore first, TimeProvider timeProvider) =>
        ValueTask.FromResult<(IIdempotencyStore, IAsyncDisposable?)>((first, null));

    /// <summary>
    /// Drives the store (and a second store on the same database, each call on one of the two) with a seeded random sequence
    /// of acquires, completions, releases and renewals with the holder's token, a stale holder's, the token that stored the
    /// result and a token never issued, over keys that differ only in case, scope or length, with result bytes standing for
    /// stored responses (status, headers, body; empty, binary, 64 KiB), and clock moves (whole seconds, onto an expiry and one
    /// second short of it). Each outcome is checked against a plain reference model of the port's contract
    /// (<see cref="IIdempotencyStore"/>), and every so often every key is probed: one holder per key, a result returned
    /// byte for byte until its expiry and not at it, a released or expired key taken again, a lapsed holder acting while
    /// nobody took its key and refused once somebody did.
    /// </summary>
    [Theory]
    [MemberData(nameof(IdempotencyModelSeeds))]
    public async Task Model_RandomOperationsOnKeys_MatchTheReferenceModel(int seed)
    {
        var clock = NewClock();
        var first = await CreateStoreAsync(clock);
        var (second, owner) = await OpenSecondStoreAsync(first, clock);
        try
        {
            var run = new IdempotencyModelRun(this, clock, [first, second], seed);
            for (var op = 0; op < IdempotencyModelOperations; op++)
            {
                await run.StepAsync(op);
            }

            await run.ProbeEveryKeyAsync(IdempotencyModelOperations);
            run.AssertCoverage();
        }
        finally
        {
            if (owner is not null)
            {
                await owner.DisposeAsync();
            }
        }
    }

    /// <summary>
    /// Rounds of concurrent acquires of the same keys by tasks on the store and on a second store on the same database: of
    /// each round's racers exactly one wins each free key and the others see it locked, or its stored result byte for byte;
    /// the winner then releases (the next round has one winner again), completes while the others keep acquiring (they see
    /// locked or its result, never acquired), or lets its lock lapse and completes while the next round races to take it
    /// (either its completion stores and nobody acquires, or one acquires and its completion is refused).
    /// </summary>
    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public async Task Model_ConcurrentAcquiresOfTheSameKeys_OneWinsEach_TheOthersSeeTheLockOrTheResult(int seed)
    {
        const int Racers = 8;
        var random = new Random(seed);
        var clock = NewClock();
        var first = await CreateStoreAsync(clock);
        var (second, owner) = await OpenSecondStoreAsync(first, clock);
        try
        {
            var stores = new[] { first, second };
            var keys = Enumerable.Range(0, 3).Select(i => UniqueKey() + "-race-" + i.ToString(CultureInfo.InvariantCulture)).ToArray();
            var phases = keys.ToDictionary(k => k, _ => RacePhase.Free, StringComparer.Ordinal);
            var holders = new Dictionary<string, Guid>(StringComparer.Ordinal);
            var results = new Dictionary<string, byte[]>(StringComparer.Ordinal);
            var log = new List<string>();
            string Context(int round, string key, string what) =>
                $"seed {seed}, round {round}, key {key[^6..]} ({phases[key]}): {what}; rounds before:{Environment.NewLine}{string.Join(Environment.NewLine, log)}";

            // Every racer tries every key once, in its own order, on one of the two stores.
            async Task<List<(string Key, IdempotencyAcquireResult Found)>> RaceAsync(Task start, IIdempotencyStore store, int[] order)
            {
                await start;
                var found = new List<(string, IdempotencyAcquireResult)>();
                foreach (var i in order)
                {
                    found.Add((keys[i], await store.TryAcquireAsync(keys[i], LockTtl)));
                }

                return found;
            }

            for (var round = 0; round < 8 && phases.Values.Any(p => p != RacePhase.Completed); round++)
            {
                var start = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
                var racers = Enumerable.Range(0, Racers)
                    .Select(r => Task.Run(() => RaceAsync(start.Task, stores[r % stores.Length], [.. Enumerable.Range(0, keys.Length).OrderBy(_ => random.Next())])))
                    .ToArray();

                // The holders completing (their lock live, or lapsed) race the racers.
                var completions = new Dictionary<string, Task<bool>>(StringComparer.Ordinal);
                foreach (var key in keys.Where(k => phases[k] is RacePhase.Completing or RacePhase.Lapsed))
                {
                    var (store, token, bytes) = (stores[random.Next(stores.Length)], holders[key], results[key]);
                    completions[key] = Task.Run(async () =>
                    {
                        await start.Task;
                        return await store.CompleteAsync(key, token, bytes, ResultTtl);
                    });
                }

                start.SetResult();
                var tries = (await Task.WhenAll(racers).WaitAsync(TimeSpan.FromSeconds(60))).SelectMany(t => t).ToList();
                await Task.WhenAll(completions.Values).WaitAsync(TimeSpan.FromSeconds(60));

                foreach (var key in keys)
                {
                    var mine = tries.Where(t => t.Key == key).Select(t => t.Found).ToList();
                    var acquired = mine.Where(f => f.Status == IdempotencyAcquireStatus.Acquired).ToList();
                    var seen = string.Join(", ", mine.Select(f => f.Status));
                    bool IsResult(IdempotencyAcquireResult f) => f.Status == IdempotencyAcquireStatus.Completed && f.Result.Span.SequenceEqual(results[key]);
                    switch (phases[key])
                    {
                        case RacePhase.Free:
                            Assert.True(acquired.Count == 1 && mine.Count(f => f.Status == IdempotencyAcquireStatus.Locked) == Racers - 1, Context(round, key, $"a free key; the racers saw {seen}"));
                            holders[key] = acquired[0].LockToken;
                            break;
                        case RacePhase.Completed:
                            Assert.True(mine.All(IsResult), Context(round, key, $"a completed key; the racers saw {seen} (or other bytes)"));
                            break;
                        case RacePhase.Completing:
                            Assert.True(await completions[key], Context(round, key, "the holder's completion was refused"));
                            Assert.True(mine.All(f => f.Status == IdempotencyAcquireStatus.Locked || IsResult(f)), Context(round, key, $"completed by its holder while raced; the racers saw {seen} (or other bytes)"));
                            phases[key] = RacePhase.Completed;
                            break;
                        case RacePhase.Lapsed:
                            // Either the late completion landed first (stored, and every racer after it saw the result) or a
                            // racer took the key first (the completion refused, the other racers locked out).
                            var stored = await completions[key];
                            Assert.True(
                                stored ? acquired.Count == 0 && mine.All(IsResult) : acquired.Count == 1 && mine.Count(f => f.Status == IdempotencyAcquireStatus.Locked) == Racers - 1,
                                Context(round, key, $"the lapsed holder's completion returned {stored}; the racers saw {seen} (or other bytes)"));
                            if (stored)
                            {
                                phases[key] = RacePhase.Completed;
                            }
                            else
                            {
                                holders[key] = acquired[0].LockToken;
                                results.Remove(key);
                                phases[key] = RacePhase.Free;
                            }

                            break;
                    }
                }

                // Each key held now is released before the next round, completed during it, or left to lapse and then completed.
                foreach (var key in keys.Where(k => phases[k] == RacePhase.Free))
                {
                    var next = random.Next(3);
                    if (next == 0)
                    {
                        Assert.True(await stores[random.Next(stores.Length)].ReleaseAsync(key, holders[key]), Context(round, key, "the holder could not release it"));
                        continue;
                    }

                    phases[key] = next == 1 ? RacePhase.Completing : RacePhase.Lapsed;
                    results[key] = Encoding.UTF8.GetBytes(string.Create(CultureInfo.InvariantCulture, $"201\r\nETag: \"{round}\"\r\n\r\n{key}")).Append((byte)0).Append((byte)round).ToArray();
                }

                if (phases.Values.Any(p => p == RacePhase.Lapsed))
                {
                    // The lapsing holders' locks run out exactly (taken for LockTtl); the completing holders' outlive the move.
                    foreach (var key in keys.Where(k => phases[k] == RacePhase.Completing))
                    {
                        Assert.True(await first.RenewAsync(key, holders[key], LockTtl * 2), Context(round, key, "the holder could not renew"));
                    }

                    await AdvanceTimeAsync(clock, LockTtl);
                }

                log.Add($"round {round}: {string.Join(", ", keys.Select(k => $"{k[^6..]} {phases[k]}"))}");
            }

            // Every completed key holds the bytes its one successful completion stored, on both stores.
            foreach (var key in keys.Where(k => phases[k] == RacePhase.Completed))
            {
                foreach (var store in stores)
                {
                    var found = await store.TryAcquireAsync(key, LockTtl);
                    Assert.True(found.Status == IdempotencyAcquireStatus.Completed && found.Result.Span.SequenceEqual(results[key]), Context(-1, key, $"at the end it is {found.Status}"));
                }
            }
        }
        finally
        {
            if (owner is not null)
            {
                await owner.DisposeAsync();
            }
        }
    }

    private enum RacePhase
    {
        Free,
        Completing,
        Lapsed,
        Completed,
    }

    private sealed class IdempotencyModelRun
    {
        private static readonly TimeSpan[] LockTtls = [TimeSpan.FromSeconds(1), TimeSpan.FromSeconds(2), TimeSpan.FromSeconds(5), TimeSpan.FromSeconds(30)];
        private static readonly TimeSpan[] ResultTtls = [TimeSpan.FromSeconds(1), TimeSpan.FromSeconds(3), TimeSpan.FromSeconds(10), TimeSpan.FromSeconds(60)];

        private readonly IdempotencyStoreConformance _suite;
        private readonly FakeTimeProvider _clock;
        private readonly IIdempotencyStore[] _stores;
        private readonly int _seed;
        private readonly Random _random;
        private readonly string[] _keys;

        // The reference model: each key's entry (its token, its expiry and, once completed, its result); every token issued
        // for a key; what the log says; which outcomes the run met.
        private readonly Dictionary<string, Entry> _model = new(StringComparer.Ordinal);
        private readonly Dictionary<string, List<Guid>> _issued = new(StringComparer.Ordinal);
        private readonly List<string> _log = [];
        private readonly Dictionary<string, int> _seen = new(StringComparer.Ordinal);
        private string _doing = "";

        public IdempotencyModelRun(IdempotencyStoreConformance suite, FakeTimeProvider clock, IIdempotencyStore[] stores, int seed)
        {
            _suite = suite;
            _clock = clock;
            _stores = stores;
            _seed = seed;
            _random = new Random(seed);

            // Keys as the HTTP endpoints scope them (route and user before the client's key), differing in case only, in
            // scope only, in a non-ASCII character, and one of the longest allowed.
            var run = "idem-model:" + Guid.NewGuid().ToString("N")[..12];
            _keys =
            [
                $"{run}/POST /orders/alice/k-1",
                $"{run}/POST /orders/alice/K-1",
                $"{run}/POST /orders/bob/k-1",
                $"{run}/user/\u00e9l\u00e8ve/k-1",
                ($"{run}/long/" + new string('x', 200))[..200],
            ];
            foreach (var key in _keys)
            {
                _issued[key] = [];
            }
        }

        private DateTimeOffset Now => _clock.GetUtcNow();

        public async Task StepAsync(int op)
        {
            var roll = _random.Next(100);
            var key = _keys[_random.Next(_keys.Length)];
            var store = _random.Next(_stores.Length);
            if (roll < 28)
            {
                await AcquireAsync(op, key, store, LockTtls[_random.Next(LockTtls.Length)]);
            }
            else if (roll < 52)
            {
                await CompleteAsync(op, key, store, PickToken(key), Payload());
            }
            else if (roll < 62)
            {
                await ReleaseAsync(op, key, store, PickToken(key));
            }
            else if (roll < 74)
            {
                await RenewAsync(op, key, store, PickToken(key), LockTtls[_random.Next(LockTtls.Length)]);
            }
            else if (roll < 96)
            {
                await AdvanceAsync(op);
            }
            else
            {
                await ProbeEveryKeyAsync(op);
            }
        }

        /// <summary>Acquires every key, as a read (the port has no other): the model's answer, and a key taken is released.</summary>
        public async Task ProbeEveryKeyAsync(int op)
        {
            foreach (var key in _keys)
            {
                var store = _random.Next(_stores.Length);
                var found = await AcquireAsync(op, key, store, LockTtls[0]);
                if (found.Status == IdempotencyAcquireStatus.Acquired)
                {
                    await ReleaseAsync(op, key, store, found.LockToken);
                }
            }
        }

        public void AssertCoverage()
        {
            string[] kinds =
            [
                "acquire free", "acquire expired lock", "acquire expired result", "acquire locked", "acquire completed",
                "complete holder", "complete lapsed holder", "complete repeated", "complete refused",
                "release holder", "release refused", "renew holder", "renew lapsed holder", "renew refused", "expiry boundary",
            ];
            var missing = kinds.Where(k => _seen.GetValueOrDefault(k) == 0).ToArray();
            Assert.True(missing.Length == 0, $"seed {_seed}: the run never met {string.Join(", ", missing)} (met {string.Join(", ", _seen.Select(p => $"{p.Key} {p.Value}"))})");
        }

        private async Task<IdempotencyAcquireResult> AcquireAsync(int op, string key, int store, TimeSpan lockTtl)
        {
            var context = Context(op, $"store {store} acquires {Name(key)} for {lockTtl.TotalSeconds}s");
            var found = await _stores[store].TryAcquireAsync(key, lockTtl);
            var entry = _model.GetValueOrDefault(key);
            if (entry is not null && entry.ExpiresAt > Now)
            {
                if (entry.Result is { } result)
                {
                    Check(found.Status == IdempotencyAcquireStatus.Completed, context, $"expected the stored result, got {found.Status}");
                    Check(found.Result.Span.SequenceEqual(result), context, $"expected {Describe(result)}, got {Describe(found.Result.ToArray())}");
                    Saw("acquire completed");
                }
                else
                {
                    Check(found.Status == IdempotencyAcquireStatus.Locked, context, $"expected locked (held by {Short(entry.Token)} until {entry.ExpiresAt:HH:mm:ss}), got {found.Status}");
                    Saw("acquire locked");
                }

                _log.Add($"{_doing} -> {found.Status}");
                return found;
            }

            Check(found.Status == IdempotencyAcquireStatus.Acquired, context, $"expected acquired (the key is {(entry is null ? "free" : "expired")}), got {found.Status}");
            Check(found.LockToken != Guid.Empty && _issued.Values.All(t => !t.Contains(found.LockToken)), context, $"token {found.LockToken} is empty or was issued before");
            Saw(entry is null ? "acquire free" : entry.Result is null ? "acquire expired lock" : "acquire expired result");
            _model[key] = new Entry(found.LockToken, Now + lockTtl, Result: null);
            _issued[key].Add(found.LockToken);
            _log.Add($"{_doing} -> acquired {Short(found.LockToken)}");
            return found;
        }

        private async Task CompleteAsync(int op, string key, int store, Guid token, byte[] bytes)
        {
            var ttl = ResultTtls[_random.Next(ResultTtls.Length)];
            var context = Context(op, $"store {store} completes {Name(key)} with {Short(token)}, {Describe(bytes)} for {ttl.TotalSeconds}s");
            var stored = await _stores[store].CompleteAsync(key, token, bytes, ttl);
            var entry = _model.GetValueOrDefault(key);
            if (entry is null || entry.Token != token)
            {
                // Not the holder (never was, lost the key to another caller, or released it): nothing stored.
                Check(!stored, context, "a token that does not hold the key stored a result");
                Saw("complete refused");
            }
            else if (entry.Result is not null)
            {
                // A retry of the completion that stored the result: reported stored, the first result kept (also past its expiry, while nobody took the key).
                Check(stored, context, "a completion repeated with the token that stored the result was refused");
                Saw("complete repeated");
            }
            else
            {
                // The holder, its lock live or lapsed while nobody took the key.
                Check(stored, context, $"the holder's completion was refused (lock {(entry.ExpiresAt > Now ? "live" : "lapsed, nobody took it")})");
                Saw(entry.ExpiresAt > Now ? "complete holder" : "complete lapsed holder");
                _model[key] = entry with { ExpiresAt = Now + ttl, Result = bytes };
            }

            _log.Add($"{_doing} -> {stored}");
        }

        private async Task ReleaseAsync(int op, string key, int store, Guid token)
        {
            var context = Context(op, $"store {store} releases {Name(key)} with {Short(token)}");
            var released = await _stores[store].ReleaseAsync(key, token);
            var entry = _model.GetValueOrDefault(key);
            if (entry is null || entry.Token != token || entry.Result is not null)
            {
                Check(!released, context, "a token that does not hold the key (or a completed key) was released");
                Saw("release refused");
            }
            else
            {
                Check(released, context, "the holder could not release its key");
                Saw("release holder");
                _model.Remove(key);
            }

            _log.Add($"{_doing} -> {released}");
        }

        private async Task RenewAsync(int op, string key, int store, Guid token, TimeSpan lockTtl)
        {
            var context = Context(op, $"store {store} renews {Name(key)} with {Short(token)} for {lockTtl.TotalSeconds}s");
            var renewed = await _stores[store].RenewAsync(key, token, lockTtl);
            var entry = _model.GetValueOrDefault(key);
            if (entry is null || entry.Token != token || entry.Result is not null)
            {
                Check(!renewed, context, "a token that does not hold the key (or a completed key) was renewed");
                Saw("renew refused");
            }
            else
            {
                Check(renewed, context, $"the holder could not renew (lock {(entry.ExpiresAt > Now ? "live" : "lapsed, nobody took it")})");
                Saw(entry.ExpiresAt > Now ? "renew holder" : "renew lapsed holder");
                _model[key] = entry with { ExpiresAt = Now + lockTtl };
            }

            _log.Add($"{_doing} -> {renewed}");
        }

        private async Task AdvanceAsync(int op)
        {
            // Whole seconds, so every engine's precision (Redis keeps milliseconds) holds the expiries exactly: onto an
            // entry's expiry (the key is free at it), one second short of it, or a random span.
            var live = _model.Values.Where(e => e.ExpiresAt > Now).ToList();
            var by = TimeSpan.FromSeconds(1 + _random.Next(20));
            if (live.Count > 0 && _random.Next(2) == 0)
            {
                var until = live[_random.Next(live.Count)].ExpiresAt - Now;
                by = until > TimeSpan.FromSeconds(1) && _random.Next(3) == 0 ? until - TimeSpan.FromSeconds(1) : until;
                if (by == until)
                {
                    Saw("expiry boundary");
                }
            }

            await _suite.AdvanceTimeAsync(_clock, by);
            _log.Add($"op {op}: clock advanced by {by.TotalSeconds}s to {Now:HH:mm:ss}");
        }

        private Guid PickToken(string key)
        {
            var roll = _random.Next(100);
            var issued = _issued[key];
            if (roll < 60 && _model.TryGetValue(key, out var entry))
            {
                return entry.Token;
            }

            return roll < 90 && issued.Count > 0 ? issued[_random.Next(issued.Count)] : Guid.NewGuid();
        }

        private byte[] Payload()
        {
            // What the HTTP endpoints store: a status, headers and a body, as bytes; or none, binary bytes, a large body.
            switch (_random.Next(6))
            {
                case 0:
                    return [];
                case 1:
                    return [0x00, 0xFF, 0x80, 0x0D, 0x0A, 0x00];
                case 2:
                    var large = new byte[64 * 1024];
                    _random.NextBytes(large);
                    return large;
                default:
                    var body = $"{{\"order\":{_random.Next(1000)},\"note\":\"gr\u00fc\u00dfe \u6771\u4eac\"}}";
                    return Encoding.UTF8.GetBytes(string.Create(
                        CultureInfo.InvariantCulture,
                        $"{200 + _random.Next(3)}\r\nContent-Type: application/json; charset=utf-8\r\nETag: \"{_random.Next()}\"\r\nLocation: /orders/{_random.Next(50)}\r\n\r\n{body}"));
            }
        }

        private string Name(string key) => "key " + Array.IndexOf(_keys, key).ToString(CultureInfo.InvariantCulture);

        private static string Short(Guid token) => token.ToString("N")[..8];

        private static string Describe(byte[] bytes) => bytes.Length <= 16 ? $"[{Convert.ToHexString(bytes)}]" : $"{bytes.Length} bytes {Convert.ToHexString(bytes, 0, 8)}..";

        private void Saw(string kind) => _seen[kind] = _seen.GetValueOrDefault(kind) + 1;

        private void Check(bool condition, string context, string difference)
        {
            if (!condition)
            {
                Assert.Fail($"{context}: {difference}");
            }
        }

        private string Context(int op, string what)
        {
            _doing = string.Create(CultureInfo.InvariantCulture, $"op {op} at {Now:HH:mm:ss}: {what}");
            return string.Create(CultureInfo.InvariantCulture, $"seed {_seed}, {_doing}; the operations before it:{Environment.NewLine}{string.Join(Environment.NewLine, _log.TakeLast(20))}{Environment.NewLine}first difference");
        }

        private sealed record Entry(Guid Token, DateTimeOffset ExpiresAt, byte[]? Result);
    }
}
