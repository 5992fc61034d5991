using Herald.Persistence;
using Herald.Sagas;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Time.Testing;
using Xunit;

namespace Herald.Conformance.Sagas;

public abstract partial class SagaOrchestrationConformance
{
    /// <summary>Instances each seed of the model test runs, one after another.</summary>
    protected virtual int ModelInstances => 10;

    /// <summary>
    /// Instances each seed runs after those, scripted to park (a step fails for good, a compensation before it too): the
    /// first compensated again, the second run forward again, the third and fourth the same by two calls at once.
    /// </summary>
    protected virtual int ParkedInstances => 4;

    /// <summary>The seeds of the model test: fixed, so a failure names one that reproduces it.</summary>
    public static TheoryData<int> ModelSeeds => [1, 2, 3, 4];

    /// <summary>
    /// Runs seeded instances of seeded definitions: each step's action succeeds, fails then succeeds on a retry, fails for
    /// good, times out once or on every attempt (a fake clock), or is cut by a crash of its host, after which a new host
    /// (and, on a shared store, the second host too) resumes the instance at once, racing for its claim. Each compensation
    /// succeeds, fails once, fails for good, or is cut by a crash of its host (and resumed on the new one). Some steps retry
    /// after a back-off on the fake clock. An instance parked as Failed then has its cause fixed and is compensated again
    /// (ResumeParkedAsync) or run forward again (RetryParkedAsync), from either host, by two calls at once when that round
    /// is not parked again (one wins; the other conflicts or finds it moved on). When each instance ends, its status,
    /// completed steps and data match the reference model, each run of a step's action or compensation, and their order,
    /// match it (every step's effect once per pass, compensations in reverse order of completed steps only), every back-off
    /// lasted what the policy allows, no step ran on two hosts at once, and nothing runs on.
    /// </summary>
    [Theory]
    [MemberData(nameof(ModelSeeds))]
    public async Task Model_SeededStepOutcomesAndCrashes_MatchTheReferenceModel(int seed)
    {
        var run = new OrchestrationRun(this, seed, NewStore());
        try
        {
            // A hang is a failure too, reported with the operations so far.
            await RunAllAsync().WaitAsync(TimeSpan.FromSeconds(60));
        }
        catch (Exception ex) when (ex is not OrchestrationMismatchException)
        {
            throw new OrchestrationMismatchException(run.Describe(ex.Message), ex);
        }
        finally
        {
            await run.DisposeAsync().AsTask().WaitAsync(TimeSpan.FromSeconds(30));
        }

        async Task RunAllAsync()
        {
            await run.StartAsync();
            for (var i = 0; i < ModelInstances; i++)
            {
                await run.RunInstanceAsync(i);
            }

            for (var i = 0; i < ParkedInstances; i++)
            {
                await run.RunInstanceAsync(ModelInstances + i, parking: i);
            }

            await run.AssertNothingLeftAsync();
            run.AssertCoverage();
        }
    }

    /// <summary>A model test failure, with the seed and the operations that led to it.</summary>
    private sealed class OrchestrationMismatchException(string message, Exception? inner = null) : Exception(message, inner);

    /// <summary>What a step's action does on its runs.</summary>
    private enum Act
    {
        Ok,
        FailsOnce,
        FailsTwice,
        Fails,
        TimesOutOnce,
        TimesOut,
        Crashes,
    }

    /// <summary>What a step's compensation does on its runs.</summary>
    private enum Undo
    {
        Ok,
        FailsOnce,
        Fails,
        Crashes,
    }

    /// <summary>A run of a step's action ("do") or compensation ("undo"), as it ended: ok, failed or cancelled; fake-clock times.</summary>
    private sealed record Run(string Id, string Step, string Kind, int Attempt, string Host, string Result, DateTimeOffset Start, DateTimeOffset End);

    /// <summary>A step blocked until its token fires: the driver moves the clock past its timeout, or crashes its host.</summary>
    private sealed record Blocked(string Id, string Step, string Host, bool Crash, bool Undo = false);

    /// <summary>One seeded run: the definitions, the script of outcomes, the ledger of runs, the hosts and the checks.</summary>
    private sealed class OrchestrationRun(SagaOrchestrationConformance suite, int seed, string store) : IAsyncDisposable
    {
        private readonly Random _random = new(seed);
        // The draws of the extensions (back-offs, crashed compensations, parked resumes): a stream of their own, so the
        // seeds draw the same definitions and outcomes as before the extensions.
        private readonly Random _more = new(unchecked(seed * 7919 + 17));
        private readonly FakeTimeProvider _clock = new(new DateTimeOffset(2030, 1, 2, 3, 0, 0, TimeSpan.Zero));
        private WatchedClock? _watched;
        private readonly Dictionary<(string Id, string Step), (Act Act, Undo Undo)> _script = [];
        private readonly List<Run> _ledger = [];
        private readonly Dictionary<(string Id, string Step, string Kind), int> _active = [];
        private readonly List<string> _overlaps = [];
        private readonly System.Collections.Concurrent.ConcurrentQueue<Blocked> _blocked = new();
        private readonly List<string> _log = [];
        private readonly Dictionary<string, int> _seen = new(StringComparer.Ordinal);
        private readonly object _gate = new();
        private readonly IHost?[] _hosts = new IHost?[2];
        private readonly int[] _generation = new int[2];
        private readonly List<(SagaDefinition<Trail> Definition, HashSet<string> WithoutUndo, HashSet<string> BackingOff)> _definitions = [];
        private WatchedClock Watched => _watched ??= new WatchedClock(_clock);

        private ISagaStore Store => _hosts[0]!.Services.GetRequiredService<ISagaStore>();

        public string Describe(string failure)
        {
            lock (_gate)
            {
                return $"seed {seed}, clock {_clock.GetUtcNow():O}: {failure}{Environment.NewLine}operations:{Environment.NewLine}  {string.Join(Environment.NewLine + "  ", _log)}";
            }
        }

        public async Task StartAsync()
        {
            for (var d = 0; d < 3; d++)
            {
                var steps = _random.Next(2, 6);
                var name = $"soc{seed}-d{d}";
                var withoutUndo = new HashSet<string>(StringComparer.Ordinal);
                var backingOff = new HashSet<string>(StringComparer.Ordinal);
                var backsOff = _more.Next(steps);
                var definition = SagaDefinition.Create<Trail>(name, s =>
                {
                    for (var i = 0; i < steps; i++)
                    {
                        var step = $"s{i}";
                        // One step in five has nothing to undo.
                        var undoable = _random.Next(5) > 0;
                        if (!undoable)
                        {
                            withoutUndo.Add(step);
                        }

                        // One step in three, and at least one, retries after a back-off.
                        var backoff = _more.Next(3) == 0 || i == backsOff;
                        if (backoff)
                        {
                            backingOff.Add(step);
                        }

                        s.Step(step, c => RunAsync(c), undoable ? c => RunAsync(c) : null, backoff ? ThreeAttemptsBackingOff : ThreeAttempts, StepTimeout);
                    }
                });
                _definitions.Add((definition, withoutUndo, backingOff));
                Log($"definition {name}: {steps} steps, without compensation: {string.Join(",", withoutUndo)}; backing off: {string.Join(",", backingOff)}");
            }

            _hosts[0] = await StartHostAsync(0);
            if (suite.SharedStore)
            {
                _hosts[1] = await StartHostAsync(1);
            }
        }

        public async Task RunInstanceAsync(int index, int? parking = null)
        {
            var id = $"i{seed}-{index}";
            if (parking is not null && ParkingScript(id) is { } scripted)
            {
                await RunScriptedAsync(id, scripted.Definition, scripted.WithoutUndo, scripted.BackingOff, suite.SharedStore ? _more.Next(2) : 0, inUnitOfWork: false, forward: parking % 2 == 1, twice: parking >= 2);
                return;
            }

            var (definition, withoutUndo, backingOff) = _definitions[_random.Next(_definitions.Count)];
            foreach (var step in definition.Steps)
            {
                var roll = _random.Next(100);
                var act = roll switch
                {
                    < 50 => Act.Ok,
                    < 58 => Act.FailsOnce,
                    < 63 => Act.FailsTwice,
                    < 71 => Act.Fails,
                    < 79 => Act.TimesOutOnce,
                    < 83 => Act.TimesOut,
                    _ => Act.Crashes,
                };
                var undoRoll = _random.Next(100);
                var undo = undoRoll < 75 ? Undo.Ok : undoRoll < 90 ? Undo.FailsOnce : Undo.Fails;
                // One compensation in five that would succeed is cut by a crash of its host instead.
                if (undo == Undo.Ok && _more.Next(5) == 0)
                {
                    undo = Undo.Crashes;
                }

                _script[(id, step.Name)] = (act, undo);
            }

            var slot = suite.SharedStore ? _random.Next(2) : 0;
            await RunScriptedAsync(id, definition, withoutUndo, backingOff, slot, inUnitOfWork: _random.Next(10) < 3, forward: null, twice: null);
        }

        // Scripts an instance to park: a step fails for good and the compensation of an earlier step too; every other run
        // works in the end, so the round that fixes either cause ends the instance. Null when no definition allows it.
        private (SagaDefinition<Trail> Definition, HashSet<string> WithoutUndo, HashSet<string> BackingOff)? ParkingScript(string id)
        {
            // Preferably one with two compensations before its last step, so one of them is also cut by a crash.
            int Undoable((SagaDefinition<Trail> Definition, HashSet<string> WithoutUndo, HashSet<string>) d) =>
                d.Definition.Steps.Take(d.Definition.Steps.Count - 1).Count(s => !d.WithoutUndo.Contains(s.Name));
            var candidates = _definitions.Where(d => Undoable(d) >= 2).ToList();
            candidates = candidates.Count > 0 ? candidates : [.. _definitions.Where(d => Undoable(d) >= 1)];
            if (candidates.Count == 0)
            {
                return null;
            }

            var (definition, withoutUndo, backingOff) = candidates[_more.Next(candidates.Count)];
            var steps = definition.Steps.Select(s => s.Name).ToList();
            var undoable = Enumerable.Range(0, steps.Count - 1).Where(i => !withoutUndo.Contains(steps[i])).ToList();
            var parksAt = undoable[_more.Next(undoable.Count)];
            // Preferably one that backs off between its attempts.
            var later = Enumerable.Range(parksAt + 1, steps.Count - parksAt - 1).ToList();
            var backingOffLater = later.Where(i => backingOff.Contains(steps[i])).ToList();
            var failsAt = backingOffLater.Count > 0 ? backingOffLater[_more.Next(backingOffLater.Count)] : later[_more.Next(later.Count)];
            for (var i = 0; i < steps.Count; i++)
            {
                var act = i == failsAt ? (_more.Next(2) == 0 ? Act.Fails : Act.TimesOut) : (Act)new[] { Act.Ok, Act.FailsOnce, Act.TimesOutOnce, Act.Crashes }[_more.Next(4)];
                var undo = i == parksAt ? Undo.Fails : new[] { Undo.Ok, Undo.FailsOnce, Undo.Crashes }[_more.Next(3)];
                _script[(id, steps[i])] = (act, undo);
            }

            // Another compensation due before the parked one is cut by a crash of its host.
            var others = undoable.Where(i => i != parksAt && i < failsAt).ToList();
            if (others.Count > 0)
            {
                var crashes = steps[others[_more.Next(others.Count)]];
                _script[(id, crashes)] = (_script[(id, crashes)].Act, Undo.Crashes);
            }

            return (definition, withoutUndo, backingOff);
        }

        // Runs an instance scripted already; a parked one is then fixed and run again (forward or compensating, once or by
        // two calls at once, as given; drawn when null) for up to three rounds.
        private async Task RunScriptedAsync(string id, SagaDefinition<Trail> definition, HashSet<string> withoutUndo, HashSet<string> backingOff, int slot, bool inUnitOfWork, bool? forward, bool? twice)
        {
            Log($"{id} of {definition.Name} on host {slot}{(inUnitOfWork ? " (started in a unit of work)" : "")}: {string.Join(", ", definition.Steps.Select(s => $"{s.Name} {_script[(id, s.Name)].Act}/{(withoutUndo.Contains(s.Name) ? "-" : _script[(id, s.Name)].Undo)}"))}");

            var model = new Model(definition.Steps.Select(s => s.Name).ToList(), withoutUndo, step => _script[(id, step)]);
            model.Forward(0);
            var host = _hosts[slot]!;
            var orchestrator = host.Services.GetRequiredService<SagaOrchestrator>();
            var pending = new List<Task>();
            if (inUnitOfWork)
            {
                await host.Services.GetRequiredService<UnitOfWorkRunner>().RunAsync(async (services, token) =>
                    Assert.True(await orchestrator.StartInAsync(definition, id, new Trail(), services.GetRequiredService<IUnitOfWork>(), token)));
            }
            else
            {
                pending.Add(orchestrator.StartAsync(definition, id, new Trail(), Stopping(host)));
            }

            await DriveAsync(definition, id, pending, racing: false);

            // A parked instance: its cause is fixed and it is compensated again or run forward again, up to three rounds.
            for (var round = 0; round < 3 && model.Status == SagaStatus.Failed; round++)
            {
                await CheckAsync(definition, backingOff, id, model);
                var forwarding = forward ?? _more.Next(2) == 0;
                if (forwarding)
                {
                    // The step whose failure it was compensating works now.
                    _script[(id, model.FailedStep!)] = (Act.Ok, _script[(id, model.FailedStep!)].Undo);
                    model.Retry();
                }
                else
                {
                    // The compensation that parked it works now (or fails once more, retried).
                    var parkedAt = model.Completed[^1];
                    _script[(id, parkedAt)] = (_script[(id, parkedAt)].Act, _more.Next(3) == 0 ? Undo.FailsOnce : Undo.Ok);
                    model.Resume();
                }

                // Two calls at once only when the round is not parked again: a call that starts after the other parked it
                // once more would rightly run it again.
                var racing = model.Status != SagaStatus.Failed && (twice ?? _more.Next(2) == 0);
                var racers = !racing ? [_hosts[suite.SharedStore ? _more.Next(2) : 0]!]
                    : suite.SharedStore ? new[] { _hosts[0]!, _hosts[1]! } : [_hosts[0]!, _hosts[0]!];
                Saw(forwarding ? "retry-parked" : "resume-parked");
                if (racing)
                {
                    Saw("parked-race");
                }

                Log($"  {id}: {(forwarding ? "RetryParkedAsync" : "ResumeParkedAsync")} on {string.Join(" and ", racers.Select(Name))}");
                pending = [.. racers.Select(h => forwarding
                    ? h.Services.GetRequiredService<SagaOrchestrator>().RetryParkedAsync(definition, id, Stopping(h))
                    : h.Services.GetRequiredService<SagaOrchestrator>().ResumeParkedAsync(definition, id, Stopping(h)))];
                await DriveAsync(definition, id, pending, racing);
            }

            await CheckAsync(definition, backingOff, id, model);
        }

        // Drives an instance until it ends: moves the clock past a blocked step's timeout or to a back-off's end, crashes the
        // host of a step the script cuts and resumes the instance on the new host (and the other one). Of calls racing on a
        // parked instance, all but one may conflict.
        private async Task DriveAsync(SagaDefinition<Trail> definition, string id, List<Task> pending, bool racing)
        {
            var all = new List<Task>(pending);
            while (true)
            {
                var blocked = await Eventually.ValueAsync(
                    async () =>
                    {
                        if (_blocked.TryDequeue(out var b))
                        {
                            return b;
                        }

                        if (Watched.NextBackoff() is { } due)
                        {
                            // Its timer exists: the run waits for the clock alone.
                            Log($"  {id} backs off: clock +{(due - _clock.GetUtcNow()).TotalSeconds:0.###} s");
                            Saw("backoff");
                            _clock.Advance(due - _clock.GetUtcNow());
                            return null;
                        }

                        return pending.All(t => t.IsCompleted) && await Store.LoadAsync(definition.Name, id) is { IsFinished: true } && Idle(id) ? new Blocked(id, "", "", false) : null;
                    },
                    $"{id} ends or blocks");
                if (blocked.Step.Length == 0)
                {
                    break;
                }

                Assert.Equal(id, blocked.Id);
                if (!blocked.Crash)
                {
                    Log($"  {id} {blocked.Step} blocked on {blocked.Host}: clock +{StepTimeout.TotalSeconds + 1} s");
                    Saw("timeout");
                    _clock.Advance(StepTimeout + TimeSpan.FromSeconds(1));
                    continue;
                }

                Saw(blocked.Undo ? "undo-crash" : "crash");
                var crashed = Array.FindIndex(_hosts, h => h is not null && Name(h) == blocked.Host);
                Log($"  {id} {blocked.Step} {(blocked.Undo ? "undo" : "do")} blocked on {blocked.Host}: host {crashed} crashes");
                await _hosts[crashed]!.StopAsync();
                _hosts[crashed]!.Dispose();
                foreach (var task in pending)
                {
                    // A run cut by the crash ends with its cancellation; nothing of its step committed.
                    await Task.WhenAny(task);
                }

                _clock.Advance(StaleAfter + TimeSpan.FromSeconds(1));
                _hosts[crashed] = await StartHostAsync(crashed);
                // The new host's start-up sweep, and a resume on each host (twice on the one host of an in-memory store),
                // race for the instance: one claim wins.
                var racers = suite.SharedStore ? new[] { _hosts[0]!, _hosts[1]! } : [_hosts[0]!, _hosts[0]!];
                Log($"  {id}: resumed on {string.Join(" and ", racers.Select(Name))}");
                pending = [.. racers.Select(h => h.Services.GetRequiredService<SagaOrchestrator>().ResumeAsync(definition, id, Stopping(h)))];
                all.AddRange(pending);
            }

            var conflicts = 0;
            foreach (var task in all.Where(t => t.IsFaulted && t.Exception!.InnerException is not OperationCanceledException))
            {
                if (racing && task.Exception!.InnerException is SagaConcurrencyException && ++conflicts < 2)
                {
                    Log($"  {id}: a racing call lost: {task.Exception.InnerException.Message}");
                    continue;
                }

                await task;
            }
        }

        public async Task AssertNothingLeftAsync()
        {
            var unfinished = new List<string>();
            foreach (var (definition, _, _) in _definitions)
            {
                var page = await Store.ListAsync(SagaQuery.Unfinished(limit: 100) with { SagaType = definition.Name });
                unfinished.AddRange(page.Select(i => $"{i.Id} {i.Status} at {i.State}"));
            }

            Assert.True(unfinished.Count == 0, $"unfinished instances left: {string.Join("; ", unfinished)}");
            lock (_gate)
            {
                Assert.True(_overlaps.Count == 0, $"ran on two hosts at once: {string.Join("; ", _overlaps)}");
            }
        }

        public void AssertCoverage()
        {
            string[] kinds = ["Completed", "Compensated", "crash", "timeout", "undo-crash", "backoff", "resume-parked", "retry-parked", "parked-race"];
            var missing = kinds.Where(k => _seen.GetValueOrDefault(k) == 0).ToArray();
            Assert.True(missing.Length == 0, $"the run never met {string.Join(", ", missing)} (met {string.Join(", ", _seen.Select(p => $"{p.Key} {p.Value}"))})");
        }

        public async ValueTask DisposeAsync()
        {
            foreach (var host in _hosts)
            {
                if (host is not null)
                {
                    await host.StopAsync();
                    host.Dispose();
                }
            }
        }

        private async Task<IHost> StartHostAsync(int slot)
        {
            var name = $"host{slot}.{++_generation[slot]}";
            Log($"start {name}");
            return await suite.StartHostAsync(store, name, Watched, _definitions.Select(d => d.Definition));
        }

        // A run the test starts is cut when its host stops, as one the host starts is.
        private static CancellationToken Stopping(IHost host) => host.Services.GetRequiredService<IHostApplicationLifetime>().ApplicationStopping;

        private static string Name(IHost host) => host.Services.GetRequiredService<HostTag>().Name;

        private void Log(string line)
        {
            lock (_gate)
            {
                _log.Add(line);
            }
        }

        private void Saw(string kind) => _seen[kind] = _seen.GetValueOrDefault(kind) + 1;

        private bool Idle(string id)
        {
            lock (_gate)
            {
                return !_active.Any(a => a.Key.Id == id && a.Value > 0);
            }
        }

        // Every action and compensation of every definition: does what the script says for this instance and step, and
        // records the run in the ledger, with the host it ran on; a run that overlaps another of the same step is noted.
        private async ValueTask RunAsync(SagaStepContext<Trail> c)
        {
            var host = c.Services.GetRequiredService<HostTag>().Name;
            var kind = c.IsCompensation ? "undo" : "do";
            var key = (c.SagaId, c.StepName, kind);
            var (act, undo) = _script[(c.SagaId, c.StepName)];
            int earlier;
            var start = _clock.GetUtcNow();
            lock (_gate)
            {
                earlier = _ledger.Count(r => (r.Id, r.Step, r.Kind) == key);
                var active = _active[key] = _active.GetValueOrDefault(key) + 1;
                if (active > 1)
                {
                    _overlaps.Add($"{c.SagaId} {c.StepName} {kind} attempt {c.Attempt} on {host}");
                }

                _log.Add($"    {host}: {c.SagaId} {c.StepName} {kind} attempt {c.Attempt}");
            }

            var result = "ok";
            try
            {
                if (c.IsCompensation)
                {
                    if (undo == Undo.Crashes && earlier == 0)
                    {
                        _blocked.Enqueue(new Blocked(c.SagaId, c.StepName, host, Crash: true, Undo: true));
                        await Task.Delay(Timeout.InfiniteTimeSpan, c.CancellationToken);
                    }

                    if (undo == Undo.Fails || (undo == Undo.FailsOnce && c.Attempt == 1))
                    {
                        throw new InvalidOperationException($"compensation of {c.StepName} refused");
                    }

                    c.Data.Done.Remove(c.StepName);
                }
                else
                {
                    if (act == Act.Fails || (act == Act.FailsOnce && c.Attempt == 1) || (act == Act.FailsTwice && c.Attempt <= 2))
                    {
                        throw new InvalidOperationException($"{c.StepName} refused");
                    }

                    if (act == Act.TimesOut || (act == Act.TimesOutOnce && earlier == 0) || (act == Act.Crashes && earlier == 0))
                    {
                        _blocked.Enqueue(new Blocked(c.SagaId, c.StepName, host, act == Act.Crashes));
                        await Task.Delay(Timeout.InfiniteTimeSpan, c.CancellationToken);
                    }

                    c.Data.Done.Add(c.StepName);
                }
            }
            catch (OperationCanceledException)
            {
                result = "cancelled";
                throw;
            }
            catch (InvalidOperationException)
            {
                result = "failed";
                throw;
            }
            finally
            {
                lock (_gate)
                {
                    _active[key]--;
                    _ledger.Add(new Run(c.SagaId, c.StepName, kind, c.Attempt, host, result, start, _clock.GetUtcNow()));
                    _log.Add($"    {host}: {c.SagaId} {c.StepName} {kind} attempt {c.Attempt} {result}");
                }
            }
        }

        // Checks the instance as stored and the ledger of its runs against the reference model.
        private async Task CheckAsync(SagaDefinition<Trail> definition, HashSet<string> backingOff, string id, Model model)
        {
            var stored = await Store.LoadAsync(definition.Name, id);
            Assert.NotNull(stored);
            Saw(stored.Status.ToString());
            List<Run> runs;
            lock (_gate)
            {
                runs = [.. _ledger.Where(r => r.Id == id)];
                _log.Add($"  {id} ended {stored.Status} with {string.Join(",", stored.CompletedSteps)}; model {model.Status} with {string.Join(",", model.Completed)}");
            }

            var what = $"{id} ({definition.Name})";
            var status = model.Status;
            Assert.Equal((what, status, string.Join(",", model.Completed)), (what, stored.Status, string.Join(",", stored.CompletedSteps)));
            Assert.Equal((what, string.Join(",", model.Done)), (what, string.Join(",", System.Text.Json.JsonSerializer.Deserialize<Trail>(stored.Data.Span, System.Text.Json.JsonSerializerOptions.Web)!.Done)));
            Assert.True(status == SagaStatus.Completed ? stored.Error is null : stored.Error is not null, $"{what}: error '{stored.Error}' for {status}");
            if (status == SagaStatus.Failed)
            {
                Assert.Contains($"Compensation of step '{model.Completed[^1]}' failed", stored.Error, StringComparison.Ordinal);
                // Parked again: the cause and the latest compensation failure, not one more per resume.
                Assert.Equal(1, stored.Error!.Split("Compensation of step '").Length - 1);
            }

            // Every run of each step's action, then of its compensation, as the model has them, step by step.
            Assert.Equal((what, Runs(model.DoRuns)), (what, Runs(runs.Where(r => r.Kind == "do").Select(r => (r.Step, $"{r.Attempt}:{r.Result}")))));
            Assert.Equal((what, Runs(model.UndoRuns)), (what, Runs(runs.Where(r => r.Kind == "undo").Select(r => (r.Step, $"{r.Attempt}:{r.Result}")))));
            // The effects in order: the actions in step order, compensations in reverse order of the steps still completed.
            Assert.Equal((what, string.Join(", ", model.Effects)), (what, string.Join(", ", runs.Where(r => r.Result == "ok").Select(r => $"{r.Kind} {r.Step}"))));

            // A retry waits its back-off on the clock (within the policy's jittered bounds) or none at all.
            foreach (var group in runs.GroupBy(r => (r.Step, r.Kind)))
            {
                var list = group.ToList();
                for (var i = 1; i < list.Count; i++)
                {
                    var (before, after) = (list[i - 1], list[i]);
                    if (before.Result == "ok" || after.Attempt != before.Attempt + 1)
                    {
                        continue;
                    }

                    var waited = after.Start - before.End;
                    var ok = backingOff.Contains(group.Key.Step)
                        ? waited >= ThreeAttemptsBackingOff.MinDelay && waited <= ThreeAttemptsBackingOff.GetDelayCeiling(before.Attempt)
                        : waited == TimeSpan.Zero;
                    Assert.True(ok, $"{what}: {group.Key.Step} {group.Key.Kind} attempt {after.Attempt} came {waited} after attempt {before.Attempt}");
                }
            }

            lock (_gate)
            {
                Assert.True(_overlaps.Count == 0, $"ran on two hosts at once: {string.Join("; ", _overlaps)}");
            }

            static string Runs(IEnumerable<(string Step, string Result)> runs) =>
                string.Join(" | ", runs.GroupBy(r => r.Step).Select(g => $"{g.Key} {string.Join(" ", g.Select(r => r.Result))}"));
        }
    }

    /// <summary>
    /// The reference model of one instance, from its script (docs/sagas.md): the steps run in order until one fails after
    /// its retries (three attempts; a timeout is a failure; a run cut by a crash runs again from attempt 1 on the new host);
    /// then the completed steps are compensated in reverse order, and a compensation failing on all its attempts parks the
    /// instance as Failed with the steps it had not undone. <see cref="Resume"/> (ResumeParkedAsync) compensates on from the
    /// one that failed; <see cref="Retry"/> (RetryParkedAsync) runs on from the step after the last one still completed.
    /// </summary>
    private sealed class Model(List<string> steps, HashSet<string> withoutUndo, Func<string, (Act Act, Undo Undo)> script)
    {
        public SagaStatus Status { get; private set; } = SagaStatus.Running;

        public List<string> Completed { get; } = [];

        /// <summary>The steps the data holds as done: a step without a compensation stays there once compensated.</summary>
        public List<string> Done { get; } = [];

        /// <summary>The step whose failure the instance compensates.</summary>
        public string? FailedStep { get; private set; }

        public List<(string Step, string Result)> DoRuns { get; } = [];

        public List<(string Step, string Result)> UndoRuns { get; } = [];

        public List<string> Effects { get; } = [];

        public void Forward(int from)
        {
            Status = SagaStatus.Running;
            for (var i = from; i < steps.Count; i++)
            {
                var step = steps[i];
                var act = script(step).Act;
                var attempt = 1;
                var succeeded = false;
                while (attempt <= 3)
                {
                    var earlier = DoRuns.Count(r => r.Step == step);
                    if (act == Act.Fails || (act == Act.FailsOnce && attempt == 1) || (act == Act.FailsTwice && attempt <= 2))
                    {
                        DoRuns.Add((step, $"{attempt++}:failed"));
                    }
                    else if (act == Act.TimesOut || (act == Act.TimesOutOnce && earlier == 0))
                    {
                        DoRuns.Add((step, $"{attempt++}:cancelled"));
                    }
                    else if (act == Act.Crashes && earlier == 0)
                    {
                        DoRuns.Add((step, $"{attempt}:cancelled"));
                        attempt = 1;
                    }
                    else
                    {
                        DoRuns.Add((step, $"{attempt}:ok"));
                        succeeded = true;
                        break;
                    }
                }

                if (!succeeded)
                {
                    FailedStep = step;
                    Compensate();
                    return;
                }

                Completed.Add(step);
                Done.Add(step);
                Effects.Add($"do {step}");
            }

            Status = SagaStatus.Completed;
        }

        public void Resume() => Compensate();

        public void Retry() => Forward(Completed.Count == 0 ? 0 : steps.IndexOf(Completed[^1]) + 1);

        private void Compensate()
        {
            Status = SagaStatus.Compensating;
            while (Completed.Count > 0)
            {
                var step = Completed[^1];
                if (!withoutUndo.Contains(step))
                {
                    var undo = script(step).Undo;
                    var attempt = 1;
                    while (true)
                    {
                        var earlier = UndoRuns.Count(r => r.Step == step);
                        if (undo == Undo.Crashes && earlier == 0)
                        {
                            UndoRuns.Add((step, $"{attempt}:cancelled"));
                            attempt = 1;
                        }
                        else if (undo == Undo.Fails || (undo == Undo.FailsOnce && attempt == 1))
                        {
                            UndoRuns.Add((step, $"{attempt++}:failed"));
                            if (attempt > 3)
                            {
                                Status = SagaStatus.Failed;
                                return;
                            }
                        }
                        else
                        {
                            UndoRuns.Add((step, $"{attempt}:ok"));
                            break;
                        }
                    }

                    Done.Remove(step);
                    Effects.Add($"undo {step}");
                }

                Completed.RemoveAt(Completed.Count - 1);
            }

            Status = SagaStatus.Compensated;
        }
    }
}
