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

    /// <summary>The seeds of the model test: fixed, so a failure names one that reproduces it.</summary>
    public static TheoryData<int> ModelSeeds => [1, 2, 3, 4];

    /// <summary>
    /// Runs seeded instances of seeded definitions: each step's action succeeds, fails then succeeds on a retry, fails for
    /// good, times out once or on every attempt (a fake clock), or is cut by a crash of its host, after which a new host
    /// (and, on a shared store, the second host too) resumes the instance at once, racing for its claim. Each compensation
    /// succeeds, fails once, or fails for good. When each instance ends, its status, completed steps and data match the
    /// reference model, every completed step's action succeeded exactly once, compensations ran once each in reverse order
    /// for completed steps only, no step ran on two hosts at once, and nothing runs on.
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
    }

    /// <summary>A run of a step's action ("do") or compensation ("undo"), as it ended: ok, failed or cancelled.</summary>
    private sealed record Run(string Id, string Step, string Kind, int Attempt, string Host, string Result);

    /// <summary>A step blocked until its token fires: the driver moves the clock past its timeout, or crashes its host.</summary>
    private sealed record Blocked(string Id, string Step, string Host, bool Crash);

    /// <summary>One seeded run: the definitions, the script of outcomes, the ledger of runs, the hosts and the checks.</summary>
    private sealed class OrchestrationRun(SagaOrchestrationConformance suite, int seed, string store) : IAsyncDisposable
    {
        private readonly Random _random = new(seed);
        private readonly FakeTimeProvider _clock = new(new DateTimeOffset(2030, 1, 2, 3, 0, 0, TimeSpan.Zero));
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
        private List<(SagaDefinition<Trail> Definition, HashSet<string> WithoutUndo)> _definitions = [];

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

                        s.Step(step, c => RunAsync(c), undoable ? c => RunAsync(c) : null, ThreeAttempts, StepTimeout);
                    }
                });
                _definitions.Add((definition, withoutUndo));
                Log($"definition {name}: {steps} steps, without compensation: {string.Join(",", withoutUndo)}");
            }

            _hosts[0] = await StartHostAsync(0);
            if (suite.SharedStore)
            {
                _hosts[1] = await StartHostAsync(1);
            }
        }

        public async Task RunInstanceAsync(int index)
        {
            var (definition, withoutUndo) = _definitions[_random.Next(_definitions.Count)];
            var id = $"i{seed}-{index}";
            var acts = new List<Act>();
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
                _script[(id, step.Name)] = (act, undo);
                acts.Add(act);
            }

            var slot = suite.SharedStore ? _random.Next(2) : 0;
            var inUnitOfWork = _random.Next(10) < 3;
            Log($"{id} of {definition.Name} on host {slot}{(inUnitOfWork ? " (started in a unit of work)" : "")}: {string.Join(", ", definition.Steps.Select(s => $"{s.Name} {_script[(id, s.Name)].Act}/{(withoutUndo.Contains(s.Name) ? "-" : _script[(id, s.Name)].Undo)}"))}");

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

            while (true)
            {
                var blocked = await Eventually.ValueAsync(
                    async () => _blocked.TryDequeue(out var b) ? b
                        : pending.All(t => t.IsCompleted) && await Store.LoadAsync(definition.Name, id) is { IsFinished: true } && Idle(id) ? new Blocked(id, "", "", false) : null,
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

                Saw("crash");
                var crashed = Array.FindIndex(_hosts, h => h is not null && Name(h) == blocked.Host);
                Log($"  {id} {blocked.Step} blocked on {blocked.Host}: host {crashed} crashes");
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
            }

            foreach (var task in pending.Where(t => t.IsFaulted && t.Exception!.InnerException is not OperationCanceledException))
            {
                await task;
            }

            await CheckAsync(definition, withoutUndo, id, acts);
        }

        public async Task AssertNothingLeftAsync()
        {
            var unfinished = new List<string>();
            foreach (var (definition, _) in _definitions)
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
            string[] kinds = ["Completed", "Compensated", "crash", "timeout"];
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
            return await suite.StartHostAsync(store, name, _clock, _definitions.Select(d => d.Definition));
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
                    _ledger.Add(new Run(c.SagaId, c.StepName, kind, c.Attempt, host, result));
                    _log.Add($"    {host}: {c.SagaId} {c.StepName} {kind} attempt {c.Attempt} {result}");
                }
            }
        }

        // The reference model of one instance, from its script (docs/sagas.md): the steps run in order until one fails after
        // its retries (three attempts; a timeout is a failure); then the completed steps are compensated in reverse order,
        // and a compensation failing on all its attempts parks the instance as Failed with the steps it had not undone.
        private async Task CheckAsync(SagaDefinition<Trail> definition, HashSet<string> withoutUndo, string id, List<Act> acts)
        {
            var steps = definition.Steps.Select(s => s.Name).ToList();
            var failed = acts.FindIndex(a => a is Act.Fails or Act.TimesOut);
            var expectedDo = new List<string>();
            var expectedUndo = new List<string>();
            var completed = failed < 0 ? steps : steps.Take(failed).ToList();
            var remaining = new List<string>(completed);
            var done = new List<string>(completed);
            var status = failed < 0 ? SagaStatus.Completed : SagaStatus.Compensated;
            for (var i = 0; i < steps.Count && (failed < 0 || i <= failed); i++)
            {
                expectedDo.Add(acts[i] switch
                {
                    Act.Ok => "1:ok",
                    Act.FailsOnce => "1:failed 2:ok",
                    Act.FailsTwice => "1:failed 2:failed 3:ok",
                    Act.Fails => "1:failed 2:failed 3:failed",
                    Act.TimesOutOnce => "1:cancelled 2:ok",
                    Act.TimesOut => "1:cancelled 2:cancelled 3:cancelled",
                    _ => "1:cancelled 1:ok",
                });
            }

            if (failed >= 0)
            {
                for (var j = failed - 1; j >= 0; j--)
                {
                    if (withoutUndo.Contains(steps[j]))
                    {
                        remaining.RemoveAt(j);
                        continue;
                    }

                    var undo = _script[(id, steps[j])].Undo;
                    expectedUndo.Add($"{steps[j]} {(undo switch { Undo.Ok => "1:ok", Undo.FailsOnce => "1:failed 2:ok", _ => "1:failed 2:failed 3:failed" })}");
                    if (undo == Undo.Fails)
                    {
                        status = SagaStatus.Failed;
                        break;
                    }

                    remaining.RemoveAt(j);
                    done.Remove(steps[j]);
                }
            }

            var stored = await Store.LoadAsync(definition.Name, id);
            Assert.NotNull(stored);
            Saw(stored.Status.ToString());
            List<Run> runs;
            lock (_gate)
            {
                runs = [.. _ledger.Where(r => r.Id == id)];
                _log.Add($"  {id} ended {stored.Status} with {string.Join(",", stored.CompletedSteps)}; model {status} with {string.Join(",", remaining)}");
            }

            var what = $"{id} ({definition.Name})";
            Assert.Equal((what, status, string.Join(",", remaining)), (what, stored.Status, string.Join(",", stored.CompletedSteps)));
            Assert.Equal((what, string.Join(",", done)), (what, string.Join(",", System.Text.Json.JsonSerializer.Deserialize<Trail>(stored.Data.Span, System.Text.Json.JsonSerializerOptions.Web)!.Done)));
            Assert.True(status == SagaStatus.Completed ? stored.Error is null : stored.Error is not null, $"{what}: error '{stored.Error}' for {status}");
            if (status == SagaStatus.Failed)
            {
                Assert.Contains($"Compensation of step '{remaining[^1]}' failed", stored.Error, StringComparison.Ordinal);
            }

            // The actions, step by step, in order: each completed step's action succeeded exactly once; none after the failed one ran.
            var doRuns = runs.Where(r => r.Kind == "do").ToList();
            Assert.Equal(
                (what, string.Join(" | ", expectedDo.Select((e, i) => $"{steps[i]} {e}"))),
                (what, string.Join(" | ", doRuns.GroupBy(r => r.Step).Select(g => $"{g.Key} {string.Join(" ", g.Select(r => $"{r.Attempt}:{r.Result}"))}"))));
            Assert.Equal(steps.Take(doRuns.Count(r => r.Result == "ok")), doRuns.Where(r => r.Result == "ok").Select(r => r.Step));

            // The compensations: only of completed steps, in reverse order, each succeeding once, after every action.
            var undoRuns = runs.Where(r => r.Kind == "undo").ToList();
            Assert.Equal(
                (what, string.Join(" | ", expectedUndo)),
                (what, string.Join(" | ", undoRuns.GroupBy(r => r.Step).Select(g => $"{g.Key} {string.Join(" ", g.Select(r => $"{r.Attempt}:{r.Result}"))}"))));
            Assert.True(undoRuns.Count == 0 || runs.FindLastIndex(r => r.Kind == "do") < runs.FindIndex(r => r.Kind == "undo"), $"{what}: a compensation ran before the last action");
            lock (_gate)
            {
                Assert.True(_overlaps.Count == 0, $"ran on two hosts at once: {string.Join("; ", _overlaps)}");
            }
        }
    }
}
