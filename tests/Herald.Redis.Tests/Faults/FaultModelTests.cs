using System.Collections.Concurrent;
using System.Diagnostics;
using System.Text;
using Herald.Persistence;
using Herald.Redis.Internal;
using Herald.Redis.Reliability;
using Herald.Reliability.Idempotency;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;
using StackExchange.Redis;
using Xunit.Abstractions;

namespace Herald.Redis.Tests.Faults;

/// <summary>
/// A seeded model of several nodes (each its own multiplexer) using the Redis idempotency store and inbox at once while
/// faults strike at random: one node's sockets killed (<c>CLIENT KILL</c> from an admin connection), or its next script's
/// reply lost after the script ran. Operations hold locks and pending marks past their timeout (renewal must keep them),
/// fail (the key is freed), die holding a lock (it lapses), or wake after their lock lapsed and was taken (their renew,
/// complete and release must be refused). The invariants are checked on every outcome and in a probe once the faults
/// stop; a failure prints the seed and the operation log.
/// </summary>
public sealed class FaultModelTests(RedisFixture redis, ITestOutputHelper output) : IClassFixture<RedisFixture>
{
    private const int Nodes = 3;
    private const int WorkersPerNode = 3;
    private const int Keys = 4;
    private const int Messages = 6;
    private static readonly TimeSpan LockTimeout = TimeSpan.FromSeconds(3);
    private static readonly TimeSpan PendingTimeout = TimeSpan.FromSeconds(3);
    private static readonly TimeSpan Workload = TimeSpan.FromSeconds(12);
    private static readonly TimeSpan Window = TimeSpan.FromMinutes(10);
    private static readonly TimeSpan ResultTtl = TimeSpan.FromMinutes(10);

    // Two runs of one key whose (cancellation-cut) intervals overlap by more than this ran at once: the first's lease
    // runs out by its own clock no later than the stored expiry the second waited for, so only callback latency remains.
    private static readonly TimeSpan Overlap = TimeSpan.FromMilliseconds(150);

    public static TheoryData<int> Seeds => [1, 2, 3, 4];

    [Theory]
    [MemberData(nameof(Seeds))]
    public async Task Model_NodesUnderKilledConnectionsAndLostReplies_KeepEveryLockAndInboxPromise(int seed)
    {
        var run = new ModelRun(redis, seed);
        try
        {
            await run.ExecuteAsync();
        }
        finally
        {
            await run.DisposeAsync();
        }

        output.WriteLine(run.Summary());
        if (!run.Violations.IsEmpty)
        {
            output.WriteLine(run.LogText());
            Assert.Fail($"seed {seed}: {run.Violations.Count} violation(s):\n{string.Join('\n', run.Violations.Take(10))}\n--- operation log ---\n{run.LogText(400)}");
        }
    }

    private sealed record Interval(string Key, string Who, TimeSpan Start, TimeSpan End, bool Lapsing);

    private sealed class ModelFailure(string message) : Exception(message);

    private sealed class Node(int index, KillableConnection killable, LostReplies lost, RedisIdempotencyStore store, IdempotencyService service, RedisInbox inbox)
    {
        public int Index => index;
        public KillableConnection Killable => killable;
        public LostReplies Lost => lost;
        public RedisIdempotencyStore Store => store;
        public IdempotencyService Service => service;
        public RedisInbox Inbox => inbox;
    }

    private sealed class ModelRun(RedisFixture redis, int seed) : IAsyncDisposable
    {
        private readonly Stopwatch _clock = Stopwatch.StartNew();
        private readonly ConcurrentQueue<string> _log = new();
        private readonly List<Node> _nodes = [];
        private readonly Lock _gate = new();
        private readonly string _run = $"m{seed}-{Guid.NewGuid():N}"[..14];
        private readonly List<Interval> _intervals = [];
        private readonly Dictionary<string, (string Value, TimeSpan At)> _completed = [];
        private readonly Dictionary<string, List<TimeSpan>> _lapsingUntil = [];
        private readonly List<(string Key, string Who, string Value)> _replays = [];
        private readonly Dictionary<Guid, TimeSpan> _committedAt = [];
        private readonly Dictionary<Guid, TimeSpan> _commitStartedAt = [];
        private readonly Dictionary<Guid, int> _handling = [];
        private readonly ConcurrentDictionary<string, int> _counts = new();
        private int _sequence;

        public ConcurrentQueue<string> Violations { get; } = new();

        private string Endpoint => "model-" + _run;

        private readonly ConcurrentDictionary<string, bool> _keys = new();
        private readonly ConcurrentDictionary<(int Generation, int Index), Guid> _messages = new();

        // Keys and messages come in generations of two seconds, so the run keeps meeting free keys and new messages, and
        // now and then the previous generation's (completed keys, committed messages).
        private int Generation(Random random)
        {
            var generation = (int)(_clock.Elapsed.TotalSeconds / 2);
            return generation > 0 && random.Next(4) == 0 ? generation - 1 : generation;
        }

        private string PickKey(Random random)
        {
            var key = $"{_run}-g{Generation(random)}k{random.Next(Keys)}";
            _keys.TryAdd(key, true);
            return key;
        }

        private Guid PickMessage(Random random) => _messages.GetOrAdd((Generation(random), random.Next(Messages)), static _ => Guid.NewGuid());

        public async Task ExecuteAsync()
        {
            for (var i = 0; i < Nodes; i++)
            {
                _nodes.Add(await OpenNodeAsync(i));
            }

            var stop = new CancellationTokenSource(Workload);
            var workers = new List<Task>();
            for (var n = 0; n < Nodes; n++)
            {
                for (var w = 0; w < WorkersPerNode; w++)
                {
                    var node = _nodes[n];
                    var random = new Random(HashCode.Combine(seed, n, w));
                    workers.Add(Task.Run(() => WorkAsync(node, random, stop.Token)));
                }
            }

            var faults = Task.Run(() => FaultsAsync(new Random(seed * 7919), stop.Token));
            await Task.WhenAll([.. workers, faults]).WaitAsync(Workload + TimeSpan.FromSeconds(40));
            Log("workload over, faults stopped; probing every key and message");
            CheckIntervals();
            await ProbeAsync();
        }

        public string Summary() =>
            $"seed {seed}: " + string.Join(", ", _counts.OrderBy(c => c.Key).Select(c => $"{c.Key}={c.Value}"));

        public string LogText(int last = int.MaxValue)
        {
            var lines = _log.ToArray();
            return string.Join('\n', lines.Skip(Math.Max(0, lines.Length - last)));
        }

        public async ValueTask DisposeAsync()
        {
            foreach (var node in _nodes)
            {
                await node.Killable.DisposeAsync();
            }
        }

        private async Task<Node> OpenNodeAsync(int index)
        {
            var killable = await KillableConnection.ConnectAsync(redis.Multiplexer);
            var lost = LostReplies.Wrap(killable.Multiplexer);
            var options = redis.Options(lost.Multiplexer, o => o.InboxPendingTimeout = PendingTimeout);
            var connection = RedisConnection.Create(options);
            var store = new RedisIdempotencyStore(connection, options, TimeProvider.System);
            var service = new IdempotencyService(
                store,
                TimeProvider.System,
                Options.Create(new IdempotencyOptions { LockTimeout = LockTimeout, WaitTimeout = TimeSpan.FromSeconds(15), MaxPollInterval = TimeSpan.FromMilliseconds(200) }));
            var inbox = new RedisInbox(connection, options, TimeProvider.System, NullLogger<RedisInbox>.Instance);
            return new Node(index, killable, lost, store, service, inbox);
        }

        private async Task FaultsAsync(Random random, CancellationToken stop)
        {
            while (!stop.IsCancellationRequested)
            {
                try
                {
                    // The fault schedule's pace, not a wait for a result.
                    await Task.Delay(random.Next(200, 1200), stop);
                }
                catch (OperationCanceledException)
                {
                    return;
                }

                var node = _nodes[random.Next(_nodes.Count)];
                if (random.Next(3) == 0)
                {
                    node.Lost.LoseNextReply = true;
                    Log($"FAULT node{node.Index}: its next script's reply is lost");
                    Count("fault.lostReply");
                }
                else
                {
                    var cut = await node.Killable.CutAsync();
                    Log($"FAULT node{node.Index}: CLIENT KILL of {cut.Count} socket(s)");
                    Count("fault.kill");
                }
            }
        }

        private async Task WorkAsync(Node node, Random random, CancellationToken stop)
        {
            while (!stop.IsCancellationRequested)
            {
                var dice = random.Next(100);
                var who = $"node{node.Index}#{Interlocked.Increment(ref _sequence)}";
                try
                {
                    if (dice < 45)
                    {
                        await ExecuteAsync(node, random, PickKey(random), who);
                    }
                    else if (dice < 50)
                    {
                        await DieHoldingAsync(node, PickKey(random), who);
                    }
                    else if (dice < 60)
                    {
                        await WakeAfterLapseAsync(node, random, PickKey(random), who);
                    }
                    else
                    {
                        await DeliverAsync(node, random, PickMessage(random), who);
                    }

                    // Think time between a worker's operations (the pace of the schedule, not a wait for a result).
                    await Task.Delay(random.Next(5, 60), CancellationToken.None);
                }
                catch (Exception ex)
                {
                    Violation($"{who}: an unexpected exception escaped: {ex}");
                }
            }
        }

        // A holder of the key runs it: long runs outlast the lock timeout, so only renewal keeps others out.
        private async Task ExecuteAsync(Node node, Random random, string key, string who)
        {
            var hold = random.Next(5) == 0 ? TimeSpan.FromMilliseconds(random.Next(3500, 4500)) : TimeSpan.FromMilliseconds(random.Next(10, 300));
            var fail = random.Next(5) == 0;
            var value = $"{who}-value";
            var ran = false;
            var started = _clock.Elapsed;
            Log($"{who}: execute {key} (hold {hold.TotalMilliseconds:0} ms, {(fail ? "fails" : "succeeds")})");
            try
            {
                var returned = await node.Service.ExecuteAsync(key, async token =>
                {
                    ran = true;
                    await RunHoldingAsync(key, who, started, hold, token);
                    if (fail)
                    {
                        throw new ModelFailure($"{who} failed");
                    }

                    return value;
                }, ResultTtl);
                Completed(key, who, started, returned, ran ? value : null);
            }
            catch (ModelFailure)
            {
                Log($"{who}: failed as planned; {key} is freed");
                Count("idem.failed");
            }
            catch (Exception ex) when (Documented(ex))
            {
                Log($"{who}: {key} ended with {ex.GetType().Name}: {ex.Message}");
                Count("idem." + ex.GetType().Name);
            }
        }

        private async Task RunHoldingAsync(string key, string who, TimeSpan started, TimeSpan hold, CancellationToken token)
        {
            var entered = _clock.Elapsed;
            lock (_gate)
            {
                if (_completed.TryGetValue(key, out var done) && done.At < started)
                {
                    Violation($"{who}: ran {key}, completed at {done.At} by '{done.Value}', again");
                }
            }

            Log($"{who}: runs {key}");
            Count("idem.ran");
            try
            {
                await Task.Delay(hold, token);
            }
            finally
            {
                lock (_gate)
                {
                    _intervals.Add(new Interval(key, who, entered, _clock.Elapsed, false));
                }
            }
        }

        // A process that takes the key's lock and dies: nobody renews or frees it, so it must lapse after the timeout.
        private async Task DieHoldingAsync(Node node, string key, string who)
        {
            var before = _clock.Elapsed;
            var found = await TryStoreAsync(() => node.Store.TryAcquireAsync(key, LockTimeout).AsTask(), who, "acquire");
            if (found?.Status == IdempotencyAcquireStatus.Acquired)
            {
                Log($"{who}: took {key} and died holding it");
                Count("idem.died");
                AddLapsing(key, who, before);
            }
        }

        // A holder paused past its lock's timeout (a GC pause, a frozen VM): another node takes the key; then the paused one
        // wakes and renews, completes or releases with its stale token while the new holder runs. Each must be refused.
        private async Task WakeAfterLapseAsync(Node node, Random random, string key, string who)
        {
            var before = _clock.Elapsed;
            var found = await TryStoreAsync(() => node.Store.TryAcquireAsync(key, LockTimeout).AsTask(), who, "acquire");
            if (found?.Status != IdempotencyAcquireStatus.Acquired)
            {
                return;
            }

            var stale = found.Value.LockToken;
            AddLapsing(key, who, before);
            Log($"{who}: took {key}, pauses past its lock timeout");
            await Task.Delay(LockTimeout + TimeSpan.FromMilliseconds(100));

            var other = _nodes[(node.Index + 1 + random.Next(Nodes - 1)) % Nodes];
            int[] order = [0, 1, 2];
            random.Shuffle(order);
            var value = $"{who}-taker-value";
            var ran = false;
            var started = _clock.Elapsed;
            try
            {
                var returned = await other.Service.ExecuteAsync(key, async token =>
                {
                    ran = true;
                    var entered = _clock.Elapsed;
                    Log($"{who}: node{other.Index} took the lapsed {key}; the paused holder wakes");
                    try
                    {
                        // All three, in a seeded order: each must be refused while the taker holds the key.
                        foreach (var action in order)
                        {
                            var name = action switch { 0 => "renew", 1 => "complete", _ => "release" };
                            var accepted = action switch
                            {
                                0 => await TryStoreAsync(() => node.Store.RenewAsync(key, stale, LockTimeout).AsTask(), who, "stale renew"),
                                1 => await TryStoreAsync(() => node.Store.CompleteAsync(key, stale, Encoding.UTF8.GetBytes($"\"{who}-stale\""), ResultTtl).AsTask(), who, "stale complete"),
                                _ => await TryStoreAsync(() => node.Store.ReleaseAsync(key, stale).AsTask(), who, "stale release"),
                            };
                            Count("idem.stale." + name);
                            if (accepted == true)
                            {
                                Violation($"{who}: the stale holder's {name} of {key} was accepted while node{other.Index} held it");
                            }
                        }

                        // The taker holds on, past the lock timeout: a stale renew or release must not have disturbed its lock.
                        await Task.Delay(LockTimeout + TimeSpan.FromMilliseconds(500), token);
                    }
                    finally
                    {
                        lock (_gate)
                        {
                            _intervals.Add(new Interval(key, who + "-taker", entered, _clock.Elapsed, false));
                        }
                    }

                    return value;
                }, ResultTtl);
                Completed(key, who + "-taker", started, returned, ran ? value : null);
            }
            catch (Exception ex) when (Documented(ex))
            {
                Log($"{who}: the taker of {key} ended with {ex.GetType().Name}: {ex.Message}");
                Count("idem." + ex.GetType().Name);
            }
        }

        // A delivery of a message: the mark in a unit of work, the handler (long ones outlast the pending timeout), then the
        // commit or (a handler that failed) the rollback.
        private async Task DeliverAsync(Node node, Random random, Guid id, string who)
        {
            var uow = redis.BeginUnitOfWork();
            var started = _clock.Elapsed;
            bool marked;
            try
            {
                marked = await node.Inbox.TryMarkHandledAsync(Endpoint, id, Window, uow);
            }
            catch (Exception ex) when (ex is RedisConnectionException or RedisTimeoutException)
            {
                // As the pipeline does: the attempt failed, its unit of work is rolled back (removing a mark applied unanswered).
                Log($"{who}: mark of {Short(id)} failed with {ex.GetType().Name}; rolled back");
                Count("inbox.markFailed");
                await uow.RollbackAsync();
                return;
            }

            if (!marked)
            {
                lock (_gate)
                {
                    if (!_commitStartedAt.ContainsKey(id))
                    {
                        Violation($"{who}: {Short(id)} was skipped as a duplicate, but no delivery of it ever committed");
                    }
                }

                Log($"{who}: {Short(id)} is a duplicate");
                Count("inbox.duplicate");
                await uow.RollbackAsync();
                return;
            }

            lock (_gate)
            {
                if (_committedAt.TryGetValue(id, out var committed) && committed < started)
                {
                    Violation($"{who}: {Short(id)} handled again though a delivery committed it at {committed}");
                }

                _handling.TryGetValue(id, out var busy);
                if (busy > 0)
                {
                    Violation($"{who}: {Short(id)} handled while another delivery handles it");
                }

                _handling[id] = busy + 1;
            }

            var hold = random.Next(5) == 0 ? TimeSpan.FromMilliseconds(random.Next(3500, 4500)) : TimeSpan.FromMilliseconds(random.Next(10, 300));
            var commitIt = random.Next(4) != 0;
            Log($"{who}: handles {Short(id)} (hold {hold.TotalMilliseconds:0} ms, then {(commitIt ? "commit" : "rollback")})");
            Count("inbox.handled");
            await Task.Delay(hold);
            if (commitIt)
            {
                lock (_gate)
                {
                    _handling[id]--;
                    _commitStartedAt.TryAdd(id, _clock.Elapsed);
                }

                await uow.CommitAsync();
                lock (_gate)
                {
                    _committedAt.TryAdd(id, _clock.Elapsed);
                }

                Log($"{who}: committed {Short(id)}");
            }
            else
            {
                lock (_gate)
                {
                    _handling[id]--;
                }

                await uow.RollbackAsync();
                Log($"{who}: rolled back {Short(id)}");
            }
        }

        private async Task ProbeAsync()
        {
            var prober = await OpenNodeAsync(Nodes);
            _nodes.Add(prober);
            // Probed together: every lock left by a dead holder lapses within the lock timeout, whichever is probed first.
            var deadline = LockTimeout + TimeSpan.FromSeconds(5);
            async Task ProbeKeyAsync(string key)
            {
                (string Value, TimeSpan At)? done;
                lock (_gate)
                {
                    done = _completed.TryGetValue(key, out var found) ? found : null;
                }

                try
                {
                    var ran = false;
                    var returned = await prober.Service.ExecuteAsync(key, _ =>
                    {
                        ran = true;
                        return ValueTask.FromResult("probe");
                    }, ResultTtl).AsTask().WaitAsync(deadline);
                    if (done is { } completed && (ran || returned != completed.Value))
                    {
                        Violation($"probe: {key} completed with '{completed.Value}' gave '{returned}' (ran again: {ran})");
                    }
                    else if (done is null && !ran)
                    {
                        Violation($"probe: {key}, never completed, replayed '{returned}' instead of running");
                    }
                }
                catch (Exception ex)
                {
                    Violation($"probe: {key} could not be taken within {deadline} (a lock held for ever?): {ex.GetType().Name}: {ex.Message}");
                }
            }

            async Task ProbeMessageAsync(Guid id)
            {
                bool committed;
                lock (_gate)
                {
                    committed = _committedAt.ContainsKey(id);
                }

                var uow = redis.BeginUnitOfWork();
                try
                {
                    var marked = await prober.Inbox.TryMarkHandledAsync(Endpoint, id, Window, uow).AsTask().WaitAsync(PendingTimeout + TimeSpan.FromSeconds(5));
                    if (marked == committed)
                    {
                        Violation($"probe: {Short(id)} {(committed ? "committed was handled again" : "never committed was skipped")}");
                    }
                }
                catch (Exception ex)
                {
                    Violation($"probe: {Short(id)} could not be marked: {ex.GetType().Name}: {ex.Message}");
                }
                finally
                {
                    await uow.RollbackAsync();
                }
            }

            await Task.WhenAll([.. _keys.Keys.Select(ProbeKeyAsync), .. _messages.Values.Select(ProbeMessageAsync)]);
        }

        private void CheckIntervals()
        {
            lock (_gate)
            {
                foreach (var group in _intervals.GroupBy(i => i.Key))
                {
                    var runs = group.OrderBy(i => i.Start).ToList();
                    for (var i = 0; i < runs.Count; i++)
                    {
                        for (var j = i + 1; j < runs.Count && runs[j].Start < runs[i].End; j++)
                        {
                            if (runs[i].End - runs[j].Start > Overlap)
                            {
                                Violation($"{runs[i].Who} ({runs[i].Start}..{runs[i].End}) and {runs[j].Who} ({runs[j].Start}..{runs[j].End}) held {group.Key} at once");
                            }
                        }
                    }
                }

                foreach (var (key, who, value) in _replays)
                {
                    if (!_completed.TryGetValue(key, out var done) || done.Value != value)
                    {
                        Violation($"{who}: {key} replayed '{value}', which no run's caller got as its result");
                    }
                }

                foreach (var (key, untils) in _lapsingUntil)
                {
                    foreach (var until in untils)
                    {
                        // A run may start only once the dead holder's lock expired: its expiry was set after 'until - timeout'.
                        foreach (var run in _intervals.Where(i => i.Key == key && i.Start < until && i.End > until - LockTimeout))
                        {
                            if (run.Start > until - LockTimeout && until - run.Start > Overlap)
                            {
                                Violation($"{run.Who} ran {key} at {run.Start}, before a dead holder's lock lapsed at {until}");
                            }
                        }
                    }
                }
            }
        }

        private void Completed(string key, string who, TimeSpan started, string returned, string? ran)
        {
            lock (_gate)
            {
                if (_completed.TryGetValue(key, out var done))
                {
                    if (ran is not null && done.Value != ran)
                    {
                        Violation($"{who}: {key} completed twice: '{done.Value}' (at {done.At}) and '{ran}' (started {started})");
                    }
                    else if (returned != done.Value)
                    {
                        Violation($"{who}: {key}, completed with '{done.Value}', gave '{returned}'");
                    }
                }
                else if (ran is not null)
                {
                    _completed[key] = (ran, _clock.Elapsed);
                }
                else
                {
                    // A replay before the run's own caller came back: checked against the completion in the probe.
                    _replays.Add((key, who, returned));
                }
            }

            Log($"{who}: {key} gave '{returned}'{(ran is null ? " (replayed)" : string.Empty)}");
            Count(ran is null ? "idem.replayed" : "idem.completed");
        }

        private void AddLapsing(string key, string who, TimeSpan before)
        {
            lock (_gate)
            {
                if (!_lapsingUntil.TryGetValue(key, out var list))
                {
                    _lapsingUntil[key] = list = [];
                }

                list.Add(before + LockTimeout);
            }
        }

        private async Task<T?> TryStoreAsync<T>(Func<Task<T>> call, string who, string what)
            where T : struct
        {
            try
            {
                return await call();
            }
            catch (Exception ex) when (ex is RedisConnectionException or RedisTimeoutException)
            {
                Log($"{who}: {what} failed with {ex.GetType().Name}");
                Count("store." + what.Replace(' ', '_') + ".failed");
                return null;
            }
        }

        // The errors a caller is documented to get under these faults; anything else is a defect.
        private static bool Documented(Exception ex) =>
            ex is LeaseLostException or IdempotencyTimeoutException or RedisConnectionException or RedisTimeoutException;

        private static string Short(Guid id) => id.ToString("N")[..8];

        private void Violation(string text)
        {
            Violations.Enqueue($"[{_clock.Elapsed:mm\\:ss\\.fff}] {text}");
            Log("VIOLATION " + text);
        }

        private void Count(string name) => _counts.AddOrUpdate(name, 1, static (_, c) => c + 1);

        private void Log(string text) => _log.Enqueue($"[{_clock.Elapsed:mm\\:ss\\.fff}] {text}");
    }
}
