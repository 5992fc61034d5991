using System.Collections.Immutable;
using System.Globalization;
using System.Runtime.CompilerServices;
using Herald.EventSourcing;
using Herald.Messages;
using Herald.Projections;
using Herald.Reliability.DeadLetters;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Xunit;
using Xunit.Sdk;

namespace Herald.Conformance.Projections;

/// <summary>
/// A seeded model of one async projection run by two hosts on one store, its runner placed by the engine's leader
/// election: appends, stops and abrupt disposals of the leading host while a handler is held in the middle of a batch,
/// restarts, and rebuilds asked of either host (one interrupted by the leader's stop). Checked against a plain fold of the
/// log: at every quiet point the read model is the fold of the prefix its checkpoint names, each generation's committed
/// batches hold each handled event once and in order (none twice, none skipped), no two hosts ever have a batch open at
/// once, and at the end the read model is the fold of the whole log.
/// </summary>
public abstract partial class ProjectionConformance
{
    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(4)]
    [InlineData(5)]
    [InlineData(6)]
    public async Task TwoHosts_ThroughFailoversMidBatchRestartsAndRebuilds_ApplyEachEventOnce_OneHostAtATime(int seed)
    {
        var random = new Random(seed);
        var batchSize = random.GetItems([1, 4, 16], 1)[0];
        int? commitEvery = random.GetItems<int?>([null, 1, 3], 1)[0];
        var model = new FailoverModel(seed, $"batch size {batchSize}, commit every {commitEvery?.ToString(CultureInfo.InvariantCulture) ?? "default"}");
        var probe = new FailoverProbe(model);
        var store = NewStore();
        var hosts = new IHost?[2];
        var incarnations = new int[2];

        async Task<IHost> StartSlotAsync(int slot)
        {
            var name = $"h{slot}.{++incarnations[slot]}";
            model.Log($"start {name}");
            var host = await StartAsync(
                store,
                new Accounts((context, token) => probe.EnterAsync(slot, name, context, token)),
                batchSize: batchSize,
                commitEvery: commitEvery,
                configure: h => h.AddMessageType<AccountNoted>());
            hosts[slot] = host;
            return host;
        }

        async Task<int> LeaderAsync()
        {
            var leader = await Eventually.ValueAsync(
                async () =>
                {
                    for (var slot = 0; slot < 2; slot++)
                    {
                        if (hosts[slot] is { } host && (await host.Services.GetRequiredService<ProjectionManager>().GetStatusAsync(Accounts.ProjectionName)).IsRunningHere)
                        {
                            return (object)slot;
                        }
                    }

                    return null;
                },
                "a host runs the projection");
            return (int)leader;
        }

        async Task EndSlotAsync(int slot, bool abrupt)
        {
            var host = hosts[slot]!;
            hosts[slot] = null;
            model.Log($"{(abrupt ? "dispose (no stop)" : "stop")} h{slot}.{incarnations[slot]}");
            if (!abrupt)
            {
                await host.StopAsync().WaitAsync(TimeSpan.FromSeconds(15));
            }

            host.Dispose();
        }

        // Mostly the other host takes over before the stopped one is back (else the restarted one may win the lease again).
        async Task TakeOverAsync(int stopped)
        {
            if (random.Next(4) != 0)
            {
                await Eventually.UntilAsync(
                    async () => (await hosts[1 - stopped]!.Services.GetRequiredService<ProjectionManager>().GetStatusAsync(Accounts.ProjectionName)).IsRunningHere,
                    model.Describe($"h{1 - stopped}.{incarnations[1 - stopped]} takes the projection over"));
                model.Log($"h{1 - stopped}.{incarnations[1 - stopped]} leads");
            }

            await StartSlotAsync(stopped);
        }

        try
        {
            await StartSlotAsync(0);
            await StartSlotAsync(1);
            const int Rounds = 6;
            for (var round = 0; round < Rounds; round++)
            {
                var step = random.Next(6);
                await AppendAsync(hosts[random.Next(2)]!, model, random, random.Next(1, 4));
                switch (step)
                {
                    case 0:
                        await QuietCheckAsync(hosts[random.Next(2)]!, model, probe, $"round {round}");
                        break;
                    case 1 or 2:
                    {
                        // The leader holds a handler (the batch's first event or a later one) when its stop or disposal comes.
                        var leader = await LeaderAsync();
                        var nth = random.Next(1, 4);
                        var mode = random.Next(2) == 0 ? HoldMode.UntilCancelled : HoldMode.FinishesAfterTheStop;
                        var held = probe.Hold(leader, nth, mode);
                        model.Log($"hold the {nth}th next handler on h{leader}.{incarnations[leader]} ({mode})");
                        await AppendUntilAsync(hosts[1 - leader]!, model, random, held, nth + 2);
                        await EndSlotAsync(leader, abrupt: step == 2);
                        probe.Unhold();
                        await TakeOverAsync(leader);
                        await QuietCheckAsync(hosts[random.Next(2)]!, model, probe, $"after the failover of round {round}");
                        break;
                    }

                    case 3:
                    {
                        // Stopped while behind: the other takes over from the committed checkpoint.
                        var leader = await LeaderAsync();
                        await AppendAsync(hosts[leader]!, model, random, random.Next(3, 8));
                        await EndSlotAsync(leader, abrupt: random.Next(2) == 0);
                        await TakeOverAsync(leader);
                        break;
                    }

                    case 4:
                    {
                        var leader = await LeaderAsync();
                        var asker = random.Next(2);
                        var interrupt = asker != leader && random.Next(2) == 0;
                        model.Log($"rebuild asked of h{asker}.{incarnations[asker]} (leader h{leader}.{incarnations[leader]}){(interrupt ? ", the leader stopped meanwhile" : string.Empty)}");
                        var before = await ServingGenerationAsync(hosts[asker]!);
                        var rebuild = hosts[asker]!.Services.GetRequiredService<ProjectionManager>().RebuildAsync(Accounts.ProjectionName);
                        await AppendAsync(hosts[asker]!, model, random, random.Next(1, 4));
                        if (interrupt)
                        {
                            // A request stays until a leader answers it: the asking host, leading next, answers it.
                            await EndSlotAsync(leader, abrupt: random.Next(2) == 0);
                        }

                        var failure = await Record.ExceptionAsync(() => rebuild.WaitAsync(TimeSpan.FromSeconds(30)));
                        Assert.True(failure is null, model.Describe($"the rebuild asked of h{asker} failed: {failure}"));
                        var after = await ServingGenerationAsync(hosts[asker]!);
                        Assert.True(after > before, model.Describe($"the rebuild completed, yet generation {after} serves (was {before})"));
                        model.Log($"rebuilt: generation {after} serves");
                        if (interrupt)
                        {
                            await StartSlotAsync(leader);
                        }

                        await QuietCheckAsync(hosts[random.Next(2)]!, model, probe, $"after the rebuild of round {round}");
                        break;
                    }
                }
            }

            // The end: whichever host leads catches up; the read model is the fold of the whole log.
            var reader = hosts[random.Next(2)]!;
            await reader.Services.GetRequiredService<ProjectionManager>().WaitForPositionAsync(Accounts.ProjectionName, model.LastPosition).WaitAsync(Eventually.DefaultTimeout);
            var final = await QuietCheckAsync(reader, model, probe, "at the end");
            Assert.True(final == model.Count, model.Describe($"at the end the checkpoint covers {final} of the {model.Count} events"));
            probe.CheckBatches(await ServingGenerationAsync(reader), complete: true);
            Assert.Empty(await reader.Services.GetRequiredService<IDeadLetterStore>().ListAsync(DeadLetterQuery.All));
            foreach (var slot in new[] { 0, 1 })
            {
                await EndSlotAsync(slot, abrupt: false);
            }

            probe.CheckNoOverlap();
        }
        finally
        {
            foreach (var host in hosts)
            {
                host?.Dispose();
            }
        }
    }

    private static async Task<int> ServingGenerationAsync(IHost host) =>
        (int)(await host.Services.GetRequiredService<ICheckpointStore>().GetCheckpointAsync("$projection-generation:" + Accounts.ProjectionName) ?? 1);

    // Holds every new batch at its opening until none is open; then the read model must be the fold of the prefix of the
    // log its checkpoint names, and the generation's committed batches must hold each handled event up to it once.
    // Returns how many events the checkpoint covers.
    private static async Task<int> QuietCheckAsync(IHost host, FailoverModel model, FailoverProbe probe, string when)
    {
        probe.Freeze();
        try
        {
            await Eventually.UntilAsync(() => probe.OpenBatches == 0, model.Describe($"{when}, no batch is open"));
            var checkpoints = host.Services.GetRequiredService<ICheckpointStore>();
            var generation = await ServingGenerationAsync(host);
            var checkpoint = await checkpoints.GetCheckpointAsync(generation == 1 ? Accounts.ProjectionName : $"{Accounts.ProjectionName}#g{generation}") ?? 0;
            var readModels = host.Services.GetRequiredService<ReadModels>();
            var accounts = (await readModels.QueryAsync(Accounts.Table, new ReadModelQuery())).Items;
            var summary = await readModels.GetAsync(Accounts.Summaries, Accounts.SummaryId);
            var covered = model.CountAtOrBefore(checkpoint);
            var expected = model.States[covered];
            var at = $"{when}, generation {generation} at checkpoint {checkpoint} ({covered} events)";
            if (BankModel.FirstDifference(expected.Accounts.Values.ToList(), accounts) is { } difference)
            {
                throw new XunitException(model.Describe($"{at}: the accounts are not the fold of those events: {difference}"));
            }

            Assert.True(Equals(expected.Summary, summary), model.Describe($"{at}: the summary reads {summary?.ToString() ?? "(none)"}, the fold has {expected.Summary?.ToString() ?? "(none)"}"));
            probe.CheckBatches(generation, complete: false, upTo: checkpoint);
            probe.CheckNoOverlap();
            model.Log($"quiet: {at} matches");
            return covered;
        }
        finally
        {
            probe.Thaw();
        }
    }

    // Appends 1 to 6 random events to each of `appends` random account streams, and records their positions.
    private static async Task<int> AppendAsync(IHost host, FailoverModel model, Random random, int appends)
    {
        var events = host.Services.GetRequiredService<IEventStore>();
        var factory = host.Services.GetRequiredService<EnvelopeFactory>();
        var handled = 0;
        for (var i = 0; i < appends; i++)
        {
            var account = random.GetItems(AccountIds, 1)[0];
            var batch = RandomAccountEvents(random, account);

            var stream = "account-" + account;
            var appended = await events.AppendAsync(stream, ExpectedVersion.Any, [.. batch.Select(e => factory.Create(e))]);
            var positions = new List<long>();
            await foreach (var recorded in events.ReadStreamAsync(stream, fromVersion: appended.StreamVersion - batch.Length + 1))
            {
                positions.Add(recorded.Position);
            }

            model.Appended(stream, batch, positions);
            handled += batch.Count(e => e is not AccountNoted);
        }

        return handled;
    }

    // Appends until the held handler is reached (at least `handled` handled events first).
    private static async Task AppendUntilAsync(IHost host, FailoverModel model, Random random, Task held, int handled)
    {
        var deadline = DateTime.UtcNow + Eventually.DefaultTimeout;
        while (handled > 0)
        {
            handled -= await AppendAsync(host, model, random, 1);
        }

        await held.WaitAsync(deadline - DateTime.UtcNow);
    }

    private enum HoldMode
    {
        /// <summary>The handler waits on the stop's cancellation and throws it.</summary>
        UntilCancelled,

        /// <summary>The handler waits for the stop's cancellation, then finishes its event as if it had not seen it.</summary>
        FinishesAfterTheStop,
    }

    /// <summary>The log appended so far and the fold of each of its prefixes, with a log of the operations.</summary>
    private sealed class FailoverModel(int seed, string settings)
    {
        private readonly List<string> _operations = [];
        private readonly List<long> _positions = [];
        private readonly List<bool> _handled = [];

        public List<BankState> States { get; } = [new(ImmutableSortedDictionary.Create<string, AccountDocument>(StringComparer.Ordinal), null)];

        public int Count => _positions.Count;

        public long LastPosition => _positions.Count == 0 ? 0 : _positions[^1];

        /// <summary>The positions of the events the projection handles, in log order.</summary>
        public IEnumerable<long> HandledPositions => _positions.Where((_, i) => _handled[i]);

        public void Appended(string stream, IReadOnlyList<object> events, IReadOnlyList<long> positions)
        {
            lock (_operations)
            {
                Assert.Equal(events.Count, positions.Count);
                for (var i = 0; i < events.Count; i++)
                {
                    States.Add(BankModel.Apply(States[^1], events[i]));
                    _positions.Add(positions[i]);
                    _handled.Add(events[i] is not AccountNoted);
                }

                _operations.Add($"append to {stream}: {string.Join(", ", events.Select((e, i) => $"@{positions[i]} {e}"))}");
            }
        }

        public int CountAtOrBefore(long position) => _positions.Count(p => p <= position);

        public void Log(string operation)
        {
            lock (_operations)
            {
                _operations.Add(operation);
            }
        }

        public string Describe(string failure)
        {
            lock (_operations)
            {
                return $"Seed {seed} ({settings}): {failure}.{Environment.NewLine}Operations:{Environment.NewLine}  {string.Join(Environment.NewLine + "  ", _operations)}";
            }
        }
    }

    /// <summary>
    /// Sees every handler call of every host: which unit of work (batch) it belongs to, when that batch commits or rolls back,
    /// and holds a handler or the opening of batches on request.
    /// </summary>
    private sealed class FailoverProbe(FailoverModel model)
    {
        private readonly Lock _lock = new();
        private readonly ConditionalWeakTable<Herald.Persistence.IUnitOfWork, Batch> _batches = [];
        private readonly int[] _open = new int[2];
        private readonly List<Batch> _committed = [];
        private readonly List<string> _overlaps = [];
        private TaskCompletionSource _thawed = Thawed();
        private (int Slot, int Left, HoldMode Mode, TaskCompletionSource Reached)? _hold;

        public int OpenBatches
        {
            get
            {
                lock (_lock)
                {
                    return _open[0] + _open[1];
                }
            }
        }

        public void Freeze()
        {
            lock (_lock)
            {
                _thawed = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            }
        }

        public void Thaw()
        {
            lock (_lock)
            {
                _thawed.TrySetResult();
            }
        }

        /// <summary>Holds the <paramref name="nth"/> next handler call on <paramref name="slot"/>; completes when it is held.</summary>
        public Task Hold(int slot, int nth, HoldMode mode)
        {
            lock (_lock)
            {
                var reached = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
                _hold = (slot, nth, mode, reached);
                return reached.Task;
            }
        }

        public void Unhold()
        {
            lock (_lock)
            {
                _hold = null;
            }
        }

        public async ValueTask EnterAsync(int slot, string host, ProjectionContext context, CancellationToken cancellationToken)
        {
            Batch? batch;
            Task thawed;
            lock (_lock)
            {
                _batches.TryGetValue(context.UnitOfWork, out batch);
                thawed = _thawed.Task;
            }

            if (batch is null)
            {
                // A new batch: held here while a quiet point is looked at.
                await thawed.WaitAsync(cancellationToken);
                batch = new Batch(slot, host, context.Generation);
                lock (_lock)
                {
                    _batches.Add(context.UnitOfWork, batch);
                    _open[slot]++;
                    if (_open[1 - slot] > 0)
                    {
                        _overlaps.Add($"{host} opened a batch of generation {context.Generation} at @{context.Position} while h{1 - slot} had {_open[1 - slot]} open");
                    }
                }

                context.UnitOfWork.OnCommitted(_ => Close(batch, committed: true));
                context.UnitOfWork.OnRolledBack(_ => Close(batch, committed: false));
            }

            lock (_lock)
            {
                batch.Positions.Add(context.Position!.Value);
            }

            (int Slot, int Left, HoldMode Mode, TaskCompletionSource Reached)? hold = null;
            lock (_lock)
            {
                if (_hold is { } h && h.Slot == slot && h.Left >= 1)
                {
                    _hold = h with { Left = h.Left - 1 };
                    if (h.Left == 1)
                    {
                        hold = h;
                    }
                }
            }

            if (hold is { } held)
            {
                model.Log($"{host} holds @{context.Position} (event {batch.Positions.Count} of its batch, generation {context.Generation})");
                held.Reached.TrySetResult();
                var stopped = await Record.ExceptionAsync(() => Task.Delay(Timeout.Infinite, cancellationToken));
                model.Log($"{host} sees its stop at @{context.Position}");
                if (held.Mode == HoldMode.UntilCancelled && stopped is not null)
                {
                    throw stopped;
                }
            }
        }

        /// <summary>
        /// The committed batches of <paramref name="generation"/>, by first position, hold each handled event once and in order,
        /// up to <paramref name="upTo"/> (every one of them), or every handled event when <paramref name="complete"/>.
        /// </summary>
        public void CheckBatches(int generation, bool complete, long upTo = long.MaxValue)
        {
            List<Batch> batches;
            lock (_lock)
            {
                batches = [.. _committed.Where(b => b.Generation == generation).OrderBy(b => b.Positions[0])];
            }

            var applied = batches.SelectMany(b => b.Positions).ToList();
            var expected = model.HandledPositions.Where(p => p <= upTo).ToList();
            if (!complete)
            {
                // Batches may have committed past the checkpoint read (a quiet point holds only new batches).
                applied = [.. applied.Where(p => p <= upTo)];
            }

            if (!applied.SequenceEqual(expected))
            {
                var first = Enumerable.Range(0, Math.Max(applied.Count, expected.Count))
                    .First(i => i >= applied.Count || i >= expected.Count || applied[i] != expected[i]);
                throw new XunitException(model.Describe(
                    $"generation {generation}'s committed batches applied [{string.Join(" ", applied)}], the handled events up to @{upTo} are [{string.Join(" ", expected)}]; " +
                    $"they differ at index {first}. Batches: {string.Join("; ", batches.Select(b => $"{b.Host} [{string.Join(" ", b.Positions)}]"))}"));
            }
        }

        public void CheckNoOverlap()
        {
            lock (_lock)
            {
                Assert.True(_overlaps.Count == 0, model.Describe($"two hosts had batches open at once: {string.Join("; ", _overlaps)}"));
            }
        }

        private ValueTask Close(Batch batch, bool committed)
        {
            lock (_lock)
            {
                if (batch.Closed)
                {
                    return ValueTask.CompletedTask;
                }

                batch.Closed = true;
                _open[batch.Slot]--;
                if (committed)
                {
                    _committed.Add(batch);
                }
            }

            model.Log($"{batch.Host} {(committed ? "committed" : "rolled back")} generation {batch.Generation} [{string.Join(" ", batch.Positions)}]");
            return ValueTask.CompletedTask;
        }

        private static TaskCompletionSource Thawed()
        {
            var thawed = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            thawed.SetResult();
            return thawed;
        }

        private sealed class Batch(int slot, string host, int generation)
        {
            public int Slot => slot;

            public string Host => host;

            public int Generation => generation;

            public List<long> Positions { get; } = [];

            public bool Closed { get; set; }
        }
    }
}
