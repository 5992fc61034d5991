using System.Globalization;
using System.Text;
using System.Text.Json.Nodes;
using Herald.EventSourcing;
using Herald.EventSourcing.Aggregates;
using Herald.EventSourcing.Upcasting;
using Herald.Messages;
using Herald.Persistence;
using Microsoft.Extensions.Time.Testing;
using Xunit;

namespace Herald.Conformance.EventSourcing;

public abstract partial class EventStoreConformance
{
    /// <summary>Operations each seed of the aggregate model test runs; lower it for a slow store.</summary>
    protected virtual int AggregateModelOperations => 80;

    /// <summary>True when a store opened again (by <see cref="CreateStoreAsync"/>) sees what an earlier one wrote; false for memory.</summary>
    protected virtual bool SurvivesRestart => true;

    /// <summary>The seeds of the aggregate model test: fixed, so a failure names one that reproduces it.</summary>
    public static TheoryData<int> AggregateModelSeeds => [1, 2, 3, 4];

    /// <summary>
    /// Drives the aggregate path (repository, snapshot policy, snapshot store, upcasters) with a seeded random sequence over a
    /// few aggregates: commands saved directly or in a unit of work that commits or rolls back, two sessions saving from the
    /// same load, restarts, events stored under old schema versions, and snapshots written under an old snapshot version,
    /// ahead of the stream or behind it. After each step an aggregate loads as the fold of its committed events (upcast), at
    /// its stream's version, the same with and without snapshots, and from the snapshot the model says the store holds.
    /// </summary>
    [Theory]
    [MemberData(nameof(AggregateModelSeeds))]
    public async Task AggregateModel_RandomCommandsSnapshotsAndUpcasts_LoadTheFoldOfTheCommittedEvents(int seed)
    {
        var run = new AggregateModelRun(this, seed);
        try
        {
            await run.OpenAsync();
            for (var op = 0; op < AggregateModelOperations; op++)
            {
                await run.StepAsync(op);
            }

            await run.CheckAllAsync(AggregateModelOperations);
            run.AssertCoverage();
        }
        finally
        {
            await run.CloseAsync();
        }
    }

    /// <summary>The event of the model's aggregate at schema v3 (v1 had "value", v2 renamed it "amount", v3 added "note").</summary>
    private sealed record TallyAdded(int Amount, string? Note);

    /// <summary>The model aggregate's snapshot state, at snapshot schema version 2.</summary>
    private sealed record TallyState(long Digest, int Count, int Total);

    /// <summary>An aggregate whose state is an order-sensitive digest of its events, so a lost, repeated or reordered event shows.</summary>
    private sealed class ModelTally : Aggregate
    {
        public const string AddedType = "conformance-model-tally-added";
        public const string StateType = "conformance-model-tally-state";
        public const int StateVersion = 2;

        public long Digest { get; private set; }

        public int Count { get; private set; }

        public int Total { get; private set; }

        public int EventsApplied { get; private set; }

        public List<string?> Notes { get; } = [];

        protected override Type? SnapshotType => typeof(TallyState);

        public static MessageTypeRegistry CreateRegistry()
        {
            var registry = new MessageTypeRegistry();
            registry.Register<TallyAdded>(AddedType, 3);
            registry.Register<TallyState>(StateType, StateVersion);
            return registry;
        }

        public static EventUpcasterRegistry Upcasters() => new EventUpcasterRegistry()
            .Add(AddedType, 1, body => new JsonObject { ["amount"] = body["value"]!.GetValue<int>() })
            .Add(AddedType, 2, body =>
            {
                body["note"] = "upcast";
                return body;
            });

        public static long Fold(long digest, int amount, string? note) =>
            ((digest * 31) + (amount * 7L) + (note switch { null => 0, "upcast" => 1, _ => 2 })) % 1_000_000_007;

        public void Start(string id) => Id = id;

        public void Add(int amount) => Raise(new TallyAdded(amount, null));

        protected override void When(object @event)
        {
            if (@event is TallyAdded added)
            {
                Digest = Fold(Digest, added.Amount, added.Note);
                Count++;
                Total += added.Amount;
                EventsApplied++;
                Notes.Add(added.Note);
            }
        }

        protected override object CreateSnapshot() => new TallyState(Digest, Count, Total);

        protected override void RestoreSnapshot(object snapshot) => (Digest, Count, Total) = (TallyState)snapshot;
    }

    /// <summary>What the model knows of one aggregate: its committed events and the snapshot the store holds for it.</summary>
    private sealed class TallyModel(string id)
    {
        public string Id { get; } = id;

        public List<(int Amount, string? Note)> Events { get; } = [];

        // The snapshot the store holds (the highest version written; a tie replaces), and whether a load may use it: its
        // snapshot version is current and its state is the fold of the events up to it.
        public (long Version, int SchemaVersion, bool True)? Snapshot { get; private set; }

        public long Version => Events.Count;

        public long UsableSnapshotVersion => Snapshot is { SchemaVersion: ModelTally.StateVersion, True: true } s && s.Version >= 1 && s.Version <= Version ? s.Version : 0;

        public TallyState StateAt(long version)
        {
            var (digest, total) = (0L, 0);
            foreach (var (amount, note) in Events.Take((int)version))
            {
                digest = ModelTally.Fold(digest, amount, note);
                total += amount;
            }

            return new TallyState(digest, (int)version, total);
        }

        public void Stored(long version, int schemaVersion, bool isTrue)
        {
            if (Snapshot is not { } held || held.Version <= version)
            {
                Snapshot = (version, schemaVersion, isTrue);
            }
        }
    }

    /// <summary>One seeded run of the aggregate model test.</summary>
    private sealed class AggregateModelRun(EventStoreConformance suite, int seed)
    {
        private static readonly SystemTextJsonMessageSerializer Serializer = new();

        private readonly Random _random = new(seed);
        private readonly string _category = NewCategory();
        private readonly MessageTypeRegistry _registry = ModelTally.CreateRegistry();
        private readonly EventUpcasterRegistry _upcasters = ModelTally.Upcasters();
        // The repositories' clock; stores keep the system one, as some wait on theirs (SQLite's group commit delay).
        private readonly FakeTimeProvider _time = new(EventTime);
        private readonly int _snapshotEvery = 2 + (seed % 3);
        private readonly List<TallyModel> _aggregates = Enumerable.Range(0, 3).Select(i => new TallyModel($"t{i}")).ToList();
        private readonly List<string> _log = [];
        private readonly Dictionary<string, int> _seen = new(StringComparer.Ordinal);
        private IEventStore? _store;

        private IEventStore Store => _store!;

        private ISnapshotStore Snapshots => suite.SnapshotStoreFor(Store);

        public async Task OpenAsync()
        {
            _store = await suite.CreateStoreAsync(TimeProvider.System);
            _log.Add($"seed {seed}: category {_category}, a snapshot every {_snapshotEvery} events");
        }

        public async Task CloseAsync()
        {
            if (_store is not null)
            {
                await suite.DisposeStoreAsync(_store);
            }
        }

        public async Task StepAsync(int op)
        {
            try
            {
                await StepOrThrowAsync(op);
            }
            catch (Exception ex) when (ex is not Xunit.Sdk.XunitException)
            {
                Check(false, $"op {op} threw {ex}");
            }
        }

        private async Task StepOrThrowAsync(int op)
        {
            var roll = _random.Next(100);
            var touched = roll switch
            {
                < 30 => await CommandAsync(op),
                < 45 => await UnitOfWorkAsync(op),
                < 60 => await TwoSessionsAsync(op),
                < 65 => await RestartAsync(op),
                < 75 => await LegacyEventsAsync(op),
                < 92 => await TamperSnapshotAsync(op),
                _ => _aggregates,
            };

            foreach (var aggregate in touched)
            {
                await CheckAsync(op, aggregate);
            }
        }

        public async Task CheckAllAsync(int op)
        {
            foreach (var aggregate in _aggregates)
            {
                await CheckAsync(op, aggregate);
            }
        }

        // A run that never met one of the situations proves nothing about it: each seed must reach them all.
        public void AssertCoverage()
        {
            string[] kinds =
            [
                "direct save", "unit of work committed", "unit of work rolled back", "direct conflict", "unit of work conflict", "restart",
                "old schema events", "policy snapshot", "old snapshot version", "snapshot ahead", "snapshot behind", "loaded from a snapshot",
            ];
            var missing = kinds.Where(k => _seen.GetValueOrDefault(k) == 0).ToArray();
            Check(missing.Length == 0, $"the run never met {string.Join(", ", missing)} (met {string.Join(", ", _seen.Select(p => $"{p.Key} {p.Value}"))})");
        }

        private void Saw(string kind) => _seen[kind] = _seen.GetValueOrDefault(kind) + 1;

        private void Check(bool condition, string difference)
        {
            if (!condition)
            {
                Assert.Fail($"seed {seed}: {difference}{Environment.NewLine}the operations (replay with this seed):{Environment.NewLine}{string.Join(Environment.NewLine, _log)}");
            }
        }

        private string StreamOf(TallyModel aggregate) => StreamName.For(_category, aggregate.Id);

        private IEventStore Upcasting => Store.WithUpcasting(_upcasters);

        private AggregateRepository<ModelTally> Repository(IUnitOfWork? unitOfWork = null) =>
            new(Upcasting, _registry, Serializer, _time, unitOfWork, Snapshots, new AggregateOptions { Category = _category, SnapshotEvery = _snapshotEvery });

        private AggregateRepository<ModelTally> ReplayingRepository() =>
            new(Upcasting, _registry, Serializer, _time, snapshots: null, new AggregateOptions { Category = _category });

        private TallyModel PickAggregate() => _aggregates[_random.Next(_aggregates.Count)];

        private List<int> NewAmounts(int min) => Enumerable.Range(0, _random.Next(min, 4)).Select(_ => _random.Next(1, 1000)).ToList();

        private static string Amounts(List<int> amounts) => $"[{string.Join(",", amounts)}]";

        // Loads, raises 0..3 events and saves directly.
        private async Task<List<TallyModel>> CommandAsync(int op)
        {
            var aggregate = PickAggregate();
            var amounts = NewAmounts(0);
            var tally = await LoadForCommandAsync(aggregate, Repository());
            amounts.ForEach(tally.Add);
            var version = await Repository().SaveAsync(tally);
            Committed(aggregate, amounts);
            _log.Add($"op {op}: {aggregate.Id} load, add {Amounts(amounts)}, save directly -> version {version}");
            Check(version == aggregate.Version, $"op {op}: the save returned version {version}, the model is at {aggregate.Version}");
            Saw("direct save");
            return [aggregate];
        }

        // Saves commands on one or two aggregates in one unit of work, then commits it or rolls it back.
        private async Task<List<TallyModel>> UnitOfWorkAsync(int op)
        {
            var chosen = _aggregates.OrderBy(_ => _random.Next()).Take(_random.Next(1, 3)).ToList();
            var commit = _random.Next(3) > 0;
            var planned = new List<(TallyModel Aggregate, ModelTally Tally, List<int> Amounts)>();
            foreach (var aggregate in chosen)
            {
                var amounts = NewAmounts(1);
                var tally = await LoadForCommandAsync(aggregate, Repository());
                amounts.ForEach(tally.Add);
                planned.Add((aggregate, tally, amounts));
            }

            var unitOfWork = suite.BeginUnitOfWork(Store);
            var repository = Repository(unitOfWork);
            foreach (var (_, tally, _) in planned)
            {
                await repository.SaveAsync(tally);
            }

            var what = string.Join("; ", planned.Select(p => $"{p.Aggregate.Id} add {Amounts(p.Amounts)}"));
            if (commit)
            {
                await unitOfWork.CommitAsync();
                planned.ForEach(p => Committed(p.Aggregate, p.Amounts));
                Saw("unit of work committed");
            }
            else
            {
                await unitOfWork.RollbackAsync();
                Saw("unit of work rolled back");
            }

            _log.Add($"op {op}: in a unit of work {what} -> {(commit ? "committed" : "rolled back")}");
            return chosen;
        }

        // Two sessions load the same aggregate and each saves its command (directly or in a unit of work that commits); the
        // second save conflicts and writes nothing when the first wrote events.
        private async Task<List<TallyModel>> TwoSessionsAsync(int op)
        {
            var aggregate = PickAggregate();
            var first = await LoadForCommandAsync(aggregate, Repository());
            var second = await LoadForCommandAsync(aggregate, Repository());
            var (firstAmounts, secondAmounts) = (NewAmounts(0), NewAmounts(0));
            firstAmounts.ForEach(first.Add);
            secondAmounts.ForEach(second.Add);
            var (firstInUnit, secondInUnit) = (_random.Next(2) == 0, _random.Next(2) == 0);
            var context = $"op {op}: {aggregate.Id} two sessions, the first adds {Amounts(firstAmounts)} {How(firstInUnit)}, the second {Amounts(secondAmounts)} {How(secondInUnit)}";
            _log.Add(context);

            var conflict = await SaveAsync(first, firstInUnit);
            Check(conflict is null, $"{context}: the first save conflicted: {conflict?.Message}");
            Committed(aggregate, firstAmounts);

            conflict = await SaveAsync(second, secondInUnit);
            if (firstAmounts.Count > 0)
            {
                Check(conflict is not null, $"{context}: the second save, from a load the first one moved past, did not conflict");
                Check(conflict!.Actual == aggregate.Version, $"{context}: the conflict says the stream is at {conflict.Actual}, the model at {aggregate.Version}");
                Saw(secondInUnit ? "unit of work conflict" : "direct conflict");
            }
            else
            {
                Check(conflict is null, $"{context}: the second save conflicted though the first wrote nothing: {conflict?.Message}");
                Committed(aggregate, secondAmounts);
            }

            return [aggregate];

            static string How(bool inUnit) => inUnit ? "in a unit of work" : "directly";
        }

        // Saves directly or in a unit of work that then commits; returns the conflict where the documented place throws one.
        private async Task<ConcurrencyException?> SaveAsync(ModelTally tally, bool inUnitOfWork)
        {
            if (!inUnitOfWork)
            {
                try
                {
                    await Repository().SaveAsync(tally);
                    return null;
                }
                catch (ConcurrencyException ex)
                {
                    return ex;
                }
            }

            var unitOfWork = suite.BeginUnitOfWork(Store);
            await Repository(unitOfWork).SaveAsync(tally); // a conflict surfaces at the commit, never here
            try
            {
                await unitOfWork.CommitAsync();
                return null;
            }
            catch (ConcurrencyException ex)
            {
                return ex;
            }
        }

        // A new store on the same database (a process restart); the in-memory store has nothing to reopen.
        private async Task<List<TallyModel>> RestartAsync(int op)
        {
            if (suite.SurvivesRestart)
            {
                await suite.DisposeStoreAsync(Store);
                _store = null;
                _store = await suite.CreateStoreAsync(TimeProvider.System);
            }

            _log.Add($"op {op}: restart{(suite.SurvivesRestart ? "" : " (the repositories only: memory keeps nothing across a real one)")}");
            Saw("restart");
            return _aggregates;
        }

        // Events another version of the code wrote: schema v1 and v2 bodies (which the upcasters migrate) and v3 with a note.
        private async Task<List<TallyModel>> LegacyEventsAsync(int op)
        {
            var aggregate = PickAggregate();
            var events = NewAmounts(1).Select(amount => (Amount: amount, Schema: _random.Next(1, 4))).ToList();
            var envelopes = events.Select(e => NewEvent(ModelTally.AddedType, e.Schema switch
            {
                1 => $"{{\"value\":{e.Amount}}}",
                2 => $"{{\"amount\":{e.Amount}}}",
                _ => $"{{\"amount\":{e.Amount},\"note\":\"v3\"}}",
            }, e.Schema)).ToArray();
            await Store.AppendAsync(StreamOf(aggregate), ExpectedVersion.FromLoadedVersion(aggregate.Version), envelopes);
            foreach (var (amount, schema) in events)
            {
                aggregate.Events.Add((amount, schema < 3 ? "upcast" : "v3"));
            }

            _log.Add($"op {op}: {aggregate.Id} old code appends {string.Join(",", events.Select(e => $"{e.Amount}@v{e.Schema}"))} -> version {aggregate.Version}");
            Saw("old schema events");
            return [aggregate];
        }

        // Writes a snapshot past the repository: under the old snapshot version, ahead of the stream, or a true one behind it.
        private async Task<List<TallyModel>> TamperSnapshotAsync(int op)
        {
            var aggregate = PickAggregate();
            var stream = StreamOf(aggregate);
            var kind = aggregate.Version == 0 ? 1 : _random.Next(3);
            var bogus = new TallyState(424242, 99, -1);
            Snapshot snapshot;
            bool isTrue;
            switch (kind)
            {
                case 0:
                    var at = aggregate.Version == 0 ? 1 : _random.Next(1, (int)aggregate.Version + 1);
                    snapshot = NewSnapshot(stream, at, 1, bogus);
                    isTrue = false;
                    Saw("old snapshot version");
                    break;
                case 1:
                    // Far ahead, so the stream never reaches it in a run: the model need not say what such a snapshot means then.
                    snapshot = NewSnapshot(stream, aggregate.Version + 1_000 + _random.Next(3), ModelTally.StateVersion, bogus);
                    isTrue = false;
                    Saw("snapshot ahead");
                    break;
                default:
                    var behind = _random.Next(1, (int)aggregate.Version + 1);
                    snapshot = NewSnapshot(stream, behind, ModelTally.StateVersion, aggregate.StateAt(behind));
                    isTrue = true;
                    Saw("snapshot behind");
                    break;
            }

            await Snapshots.SaveSnapshotAsync(snapshot);
            aggregate.Stored(snapshot.Version, snapshot.SchemaVersion, isTrue);
            _log.Add($"op {op}: {aggregate.Id} snapshot written at version {snapshot.Version} (stream at {aggregate.Version}), snapshot v{snapshot.SchemaVersion}, {(isTrue ? "true" : "bogus")} state");
            return [aggregate];
        }

        private Snapshot NewSnapshot(string stream, long version, int schemaVersion, TallyState state) =>
            new(stream, version, ModelTally.StateType, schemaVersion, Serializer.Serialize(state, typeof(TallyState)), EventTime);

        private async Task<ModelTally> LoadForCommandAsync(TallyModel aggregate, AggregateRepository<ModelTally> repository)
        {
            var tally = await repository.LoadAsync(aggregate.Id);
            if (tally.Version == 0)
            {
                tally.Start(aggregate.Id);
            }

            return tally;
        }

        // The events of a save that committed, and the snapshot the policy takes when the save crosses a multiple.
        private void Committed(TallyModel aggregate, List<int> amounts)
        {
            var before = aggregate.Version;
            aggregate.Events.AddRange(amounts.Select(a => (a, (string?)null)));
            if (amounts.Count > 0 && aggregate.Version / _snapshotEvery > before / _snapshotEvery)
            {
                aggregate.Stored(aggregate.Version, ModelTally.StateVersion, isTrue: true);
                Saw("policy snapshot");
            }
        }

        private async Task CheckAsync(int op, TallyModel aggregate)
        {
            var stream = StreamOf(aggregate);
            var context = $"after op {op}, {aggregate.Id} ({stream})";
            var expected = aggregate.StateAt(aggregate.Version);
            var notes = aggregate.Events.Select(e => e.Note).ToList();

            var version = await Store.GetStreamVersionAsync(stream);
            Check(version == aggregate.Version, $"{context}: the stream is at version {version}, the model at {aggregate.Version}");

            var snapshot = await Snapshots.LoadSnapshotAsync(stream);
            var held = snapshot is null ? "none" : $"v{snapshot.Version} schema {snapshot.SchemaVersion}";
            var modelHeld = aggregate.Snapshot is { } s ? $"v{s.Version} schema {s.SchemaVersion}" : "none";
            Check(held == modelHeld, $"{context}: the snapshot store holds {held}, the model {modelHeld}");

            var replayed = await ReplayingRepository().LoadAsync(aggregate.Id);
            Check(State(replayed) == expected && replayed.Version == aggregate.Version && replayed.EventsApplied == aggregate.Version,
                $"{context}: loaded without snapshots as {Describe(replayed)}, the model {expected} at version {aggregate.Version}");
            Check(replayed.Notes.SequenceEqual(notes), $"{context}: the notes loaded without snapshots are [{string.Join(",", replayed.Notes)}], the model's [{string.Join(",", notes)}]");

            var loaded = await Repository().LoadAsync(aggregate.Id);
            var from = aggregate.UsableSnapshotVersion;
            Check(State(loaded) == expected && loaded.Version == aggregate.Version,
                $"{context}: loaded with snapshots as {Describe(loaded)}, the model {expected} at version {aggregate.Version} (snapshot held: {modelHeld})");
            Check(loaded.EventsApplied == aggregate.Version - from,
                $"{context}: the load with snapshots applied {loaded.EventsApplied} events, the model expects the snapshot at {from} and {aggregate.Version - from} events after it (held: {modelHeld})");
            Check(loaded.Notes.SequenceEqual(notes.Skip((int)from)), $"{context}: the notes loaded with snapshots are [{string.Join(",", loaded.Notes)}], the model's after {from} [{string.Join(",", notes.Skip((int)from))}]");
            if (from > 0)
            {
                Saw("loaded from a snapshot");
            }

            static TallyState State(ModelTally tally) => new(tally.Digest, tally.Count, tally.Total);

            static string Describe(ModelTally tally) =>
                string.Create(CultureInfo.InvariantCulture, $"{new TallyState(tally.Digest, tally.Count, tally.Total)} at version {tally.Version} ({tally.EventsApplied} events applied)");
        }
    }
}
