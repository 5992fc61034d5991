using System.Collections.Concurrent;
using System.Globalization;
using System.Text;
using Herald.EventSourcing;
using Herald.Messages;
using Xunit;

namespace Herald.Conformance.EventSourcing;

public abstract partial class EventStoreConformance
{
    /// <summary>Operations each seed of the model test runs (appends, retries, deletes, reads); lower it for a slow store.</summary>
    protected virtual int ModelOperations => 150;

    /// <summary>The seeds of the model test: fixed, so a failure names one that reproduces it.</summary>
    public static TheoryData<int> ModelSeeds => [1, 2, 3, 4, 5, 6];

    /// <summary>
    /// Drives the store with a seeded random sequence of appends (every expectation, right and wrong), retries of earlier
    /// appends (as they were, with another expectation, other content, an extra event, or to another stream), deletes and
    /// reads (streams both ways from random versions, <c>$all</c> from random positions with and without a filter), and
    /// checks each outcome against a reference model of the port's documented rules.
    /// </summary>
    [Theory]
    [MemberData(nameof(ModelSeeds))]
    public async Task Model_RandomOperations_MatchTheReferenceModel(int seed)
    {
        var run = new ModelRun(Store, seed, await Store.GetLastPositionAsync());
        for (var op = 0; op < ModelOperations; op++)
        {
            await run.StepAsync(op);
        }

        await run.CheckEverythingAsync(ModelOperations);
        run.AssertCoverage();
    }

    /// <summary>
    /// Writers append at once to overlapping streams with the exact version they last read. Afterwards every stream holds
    /// contiguous versions, each success's events exactly once where its result says, each conflict nothing, and <c>$all</c>
    /// read in full holds exactly the successful events, in position order.
    /// </summary>
    [Theory]
    [MemberData(nameof(ModelSeeds))]
    public async Task Model_ConcurrentExactVersionAppends_WriteEverySuccessOnceAndNoConflict(int seed)
    {
        const int Writers = 8;
        const int AppendsPerWriter = 10;
        const int Streams = 3;
        var category = NewCategory();
        var type = "model-" + category;
        var successes = new ConcurrentBag<(string Stream, Envelope[] Events, AppendResult Result)>();
        var conflicts = new ConcurrentBag<Envelope[]>();
        var start = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);

        async Task WriterAsync(int writer)
        {
            var random = new Random(seed * 1000 + writer);
            await start.Task;
            for (var i = 0; i < AppendsPerWriter; i++)
            {
                var stream = $"{category}-s{random.Next(Streams)}";
                var events = NewEvents(random.Next(1, 4), type);
                var version = await Store.GetStreamVersionAsync(stream);
                try
                {
                    var result = await Store.AppendAsync(stream, ExpectedVersion.FromLoadedVersion(version), events);
                    successes.Add((stream, events, result));
                }
                catch (ConcurrencyException)
                {
                    conflicts.Add(events);
                }
            }
        }

        var head = await Store.GetLastPositionAsync();
        var writers = Enumerable.Range(0, Writers).Select(w => Task.Run(() => WriterAsync(w))).ToArray();
        start.SetResult();
        await WithinTimeoutAsync(Task.WhenAll(writers), "the concurrent writers");

        var context = $"seed {seed}: {successes.Count} successes, {conflicts.Count} conflicts";
        var stored = new Dictionary<Guid, RecordedEvent>();
        for (var s = 0; s < Streams; s++)
        {
            var stream = $"{category}-s{s}";
            var events = await ReadStreamAsync(stream);
            for (var i = 0; i < events.Count; i++)
            {
                ModelRun.Check(events[i].Version == i + 1, context, $"{stream} holds versions {Versions(events)}, not 1..{events.Count}");
                ModelRun.Check(stored.TryAdd(events[i].EventId, events[i]), context, $"event {events[i].EventId} is stored twice");
            }

            ModelRun.Check(await Store.GetStreamVersionAsync(stream) == events.Count, context, $"{stream} reads at version {await Store.GetStreamVersionAsync(stream)} but holds {events.Count} events");
        }

        foreach (var (stream, events, result) in successes)
        {
            for (var i = 0; i < events.Length; i++)
            {
                var found = stored.TryGetValue(events[i].MessageId, out var recorded);
                var at = result.StreamVersion - events.Length + 1 + i;
                ModelRun.Check(found && recorded!.Stream == stream && recorded.Version == at, context,
                    $"the success at {stream}@{result.StreamVersion} put its event {i} at {(found ? $"{recorded!.Stream}@{recorded.Version}" : "nowhere")}, not {stream}@{at}");
            }

            ModelRun.Check(stored[events[^1].MessageId].Position == result.LastPosition, context,
                $"the success at {stream}@{result.StreamVersion} returned position {result.LastPosition}, its last event is at {stored[events[^1].MessageId].Position}");
        }

        foreach (var events in conflicts)
        {
            ModelRun.Check(events.All(e => !stored.ContainsKey(e.MessageId)), context, "a conflicting append wrote an event");
        }

        var expectedCount = successes.Sum(s => s.Events.Length);
        ModelRun.Check(stored.Count == expectedCount, context, $"the streams hold {stored.Count} events, the successes wrote {expectedCount}");
        var all = await ReadAllAsync(head, EventFilter.ForCategory(category));
        ModelRun.Check(all.Zip(all.Skip(1)).All(p => p.First.Position < p.Second.Position), context, "$all is not in strictly increasing position order");
        ModelRun.Check(all.Count == expectedCount && all.All(e => stored.TryGetValue(e.EventId, out var s) && s.Position == e.Position), context,
            $"$all holds {all.Count} events of the category, not exactly the {expectedCount} successful ones at their positions");
        ModelRun.Check(await Store.GetLastPositionAsync() >= all[^1].Position, context, "the last position is below an event $all returned");

        static string Versions(List<RecordedEvent> events) => string.Join(",", events.Select(e => e.Version));
    }

    /// <summary>One seeded run of the model test: the random operations, the reference model and the checks.</summary>
    private sealed class ModelRun
    {
        private static readonly ExpectedVersion[] Sentinels = [ExpectedVersion.Any, ExpectedVersion.NoStream, ExpectedVersion.StreamExists];

        private readonly IEventStore _store;
        private readonly int _seed;
        private readonly long _head;
        private readonly Random _random;
        private readonly string[] _categories;
        private readonly string[] _streams;
        private readonly string[] _types;
        private readonly Dictionary<string, ModelStream> _model = new(StringComparer.Ordinal);
        private readonly List<ModelEvent> _all = [];
        private readonly List<ModelAppend> _appends = [];
        private readonly List<string> _log = [];
        private long _bodies;
        private string _doing = "";
        private readonly Dictionary<string, int> _seen = new(StringComparer.Ordinal);

        public ModelRun(IEventStore store, int seed, long head)
        {
            _store = store;
            _seed = seed;
            _head = head;
            _random = new Random(seed);
            _categories = [NewCategory(), NewCategory()];
            _streams = Enumerable.Range(0, 5).Select(i => $"{_categories[i % 2]}-m{i}").ToArray();
            var suffix = Guid.NewGuid().ToString("N")[..12];
            _types = [$"a-{suffix}", $"b-{suffix}", $"c-{suffix}"];
        }

        public static void Check(bool condition, string context, string difference)
        {
            if (!condition)
            {
                Assert.Fail($"{context}: {difference}");
            }
        }

        public async Task StepAsync(int op)
        {
            var roll = _random.Next(100);
            if (roll < 35)
            {
                await AppendAsync(op, Pick(_streams), PickExpectation(Pick(_streams)), NewBatch(_random.Next(1, 6)), "append");
            }
            else if (roll < 38)
            {
                var stream = Pick(_streams);
                await AppendAsync(op, stream, PickExpectation(stream), [], "empty append");
            }
            else if (roll < 60 && _appends.Count > 0)
            {
                await RetryAsync(op, _appends[_random.Next(_appends.Count)]);
            }
            else if (roll < 66)
            {
                await DeleteAsync(op, Pick(_streams));
            }
            else if (roll < 84)
            {
                await ReadStreamAsync(op, Pick(_streams));
            }
            else
            {
                await ReadAllAsync(op);
            }
        }

        // At the end: every stream both ways in full, and $all from the start with each kind of filter.
        public async Task CheckEverythingAsync(int op)
        {
            foreach (var stream in _streams)
            {
                await ReadStreamAsync(op, stream, ReadDirection.Forward, 1, int.MaxValue);
                await ReadStreamAsync(op, stream, ReadDirection.Backward, long.MaxValue, int.MaxValue);
            }

            await ReadAllAsync(op, -1, null, int.MaxValue);
            await ReadAllAsync(op, -1, EventFilter.ForCategory(_categories[0]), int.MaxValue);
            await ReadAllAsync(op, -1, EventFilter.ForEventTypes(_types[0], _types[2]), int.MaxValue);
        }

        // A run that never met one of the outcomes proves nothing about it: the seeds must reach them all.
        public void AssertCoverage()
        {
            string[] kinds = ["Written", "Known", "Conflict", "retry Known", "retry Conflict", "deleted", "delete conflict"];
            var missing = kinds.Where(k => _seen.GetValueOrDefault(k) == 0).ToArray();
            Check(missing.Length == 0, $"seed {_seed}", $"the run never met {string.Join(", ", missing)} (met {string.Join(", ", _seen.Select(p => $"{p.Key} {p.Value}"))})");
        }

        private void Saw(string kind) => _seen[kind] = _seen.GetValueOrDefault(kind) + 1;

        private T Pick<T>(IReadOnlyList<T> items) => items[_random.Next(items.Count)];

        private Envelope[] NewBatch(int count) => Enumerable.Range(0, count).Select(_ => NewEvent(Pick(_types), $"{{\"seed\":{_seed},\"n\":{++_bodies}}}")).ToArray();

        private ModelStream? StreamOf(string stream) => _model.GetValueOrDefault(stream);

        private ExpectedVersion PickExpectation(string stream)
        {
            var model = StreamOf(stream);
            var current = model?.Current ?? 0;
            var last = model?.Last ?? 0;
            return _random.Next(10) switch
            {
                < 4 => Sentinels[_random.Next(3)],
                < 8 => ExpectedVersion.FromLoadedVersion(current),
                _ => WrongVersion(current, last),
            };
        }

        private ExpectedVersion WrongVersion(long current, long last)
        {
            long version;
            do
            {
                version = _random.Next(1, (int)last + 4);
            }
            while (version == current);

            return ExpectedVersion.Exactly(version);
        }

        private async Task RetryAsync(int op, ModelAppend original)
        {
            var events = original.Events;
            var stream = original.Stream;
            var expected = original.Expected;
            string what;
            switch (_random.Next(10))
            {
                case < 5:
                    what = "retry";
                    break;
                case < 7:
                    what = "retry with another expectation";
                    var start = original.Result.StreamVersion - events.Length + 1;
                    expected = _random.Next(5) switch
                    {
                        < 3 and var i => Sentinels[i],
                        3 => ExpectedVersion.FromLoadedVersion(start - 1),
                        _ => WrongVersion(start - 1, StreamOf(stream)!.Last),
                    };
                    break;
                case 7:
                    what = "retry with other content";
                    var changed = _random.Next(events.Length);
                    events = events.Select((e, i) => i == changed ? e with { Body = Encoding.UTF8.GetBytes("{\"changed\":true}") } : e).ToArray();
                    break;
                case 8:
                    what = "retry with an extra event";
                    events = [.. events, .. NewBatch(1)];
                    break;
                default:
                    what = "retry to another stream";
                    stream = Pick(_streams.Where(s => s != stream).ToArray());
                    break;
            }

            await AppendAsync(op, stream, expected, events, $"{what} of op {original.Op}");
        }

        private async Task AppendAsync(int op, string stream, ExpectedVersion expected, Envelope[] events, string what)
        {
            var context = Context(op, $"{what}: {stream} expecting {expected}, {events.Length} events [{string.Join(",", events.Select(e => e.MessageId.ToString()[^4..]))}]");
            var outcome = Decide(stream, expected, events);
            AppendResult? result = null;
            ConcurrencyException? conflict = null;
            try
            {
                result = await _store.AppendAsync(stream, expected, events);
            }
            catch (ConcurrencyException ex)
            {
                conflict = ex;
            }

            switch (outcome)
            {
                case Outcome.Conflict(var actual):
                    Check(conflict is not null, context, $"the model conflicts (stream at {actual}), the store returned {result}");
                    Check(conflict!.Actual == actual, context, $"the conflict says the stream is at {conflict.Actual}, the model at {actual}");
                    break;
                case Outcome.Known(var known):
                    Check(conflict is null, context, $"the model returns {known}, the store conflicted: {conflict?.Message}");
                    Check(result == known, context, $"the store returned {result}, the model {known}");
                    break;
                case Outcome.Written(var version, var count):
                    Check(conflict is null, context, $"the model writes at version {version}, the store conflicted: {conflict?.Message}");
                    Check(result!.StreamVersion == version, context, $"the store returned version {result.StreamVersion}, the model {version}");
                    var before = _all.Count == 0 ? _head : _all.Where(e => e.Position is not null).Select(e => e.Position!.Value).DefaultIfEmpty(_head).Max();
                    Check(result.LastPosition > before, context, $"the store returned position {result.LastPosition}, not after the last append's {before}");
                    Write(op, stream, expected, events, result, count);
                    break;
            }

            _log.Add($"{_doing} -> {(conflict is null ? result!.ToString() : "conflict")}");
            Saw(outcome.GetType().Name);
            if (what.StartsWith("retry", StringComparison.Ordinal))
            {
                Saw("retry " + outcome.GetType().Name);
            }

            if (conflict is null)
            {
                var head = await _store.GetLastPositionAsync();
                Check(head >= result!.LastPosition, context, $"the last position {head} is below the append's {result.LastPosition}");
            }
        }

        // The port's rules (IEventStore.AppendAsync): a retry of stored ids at the same place returns the original result;
        // the same ids with other content, elsewhere or mixed with new ones conflict; otherwise the expectation decides.
        private Outcome Decide(string stream, ExpectedVersion expected, Envelope[] events)
        {
            var model = StreamOf(stream);
            var current = model?.Current ?? 0;
            if (events.Length == 0)
            {
                return expected.IsSatisfiedBy(current)
                    ? new Outcome.Known(new AppendResult(current, current == 0 ? 0 : model!.Events[^1].Position!.Value))
                    : new Outcome.Conflict(current);
            }

            if (model is not null && model.VersionsById.TryGetValue(events[0].MessageId, out var start))
            {
                var place = expected.IsExact ? expected.Value + 1 : expected.IsNoStream ? model.StartOfLife(start) : start;
                if (place != start)
                {
                    return new Outcome.Conflict(current);
                }

                for (var i = 0; i < events.Length; i++)
                {
                    var version = start + i;
                    if (version > model.Last || model.Events[(int)version - 1].Envelope is var stored && (stored.MessageId != events[i].MessageId
                        || stored.MessageType != events[i].MessageType || !stored.Body.Span.SequenceEqual(events[i].Body.Span)))
                    {
                        return new Outcome.Conflict(current);
                    }
                }

                var last = model.Events[(int)start + events.Length - 2];
                return new Outcome.Known(new AppendResult(last.Version, last.Position!.Value));
            }

            if (model is not null && events.Any(e => model.VersionsById.ContainsKey(e.MessageId)))
            {
                return new Outcome.Conflict(current);
            }

            return expected.IsSatisfiedBy(current) ? new Outcome.Written((model?.Last ?? 0) + events.Length, events.Length) : new Outcome.Conflict(current);
        }

        private void Write(int op, string stream, ExpectedVersion expected, Envelope[] events, AppendResult result, int count)
        {
            if (!_model.TryGetValue(stream, out var model))
            {
                _model[stream] = model = new ModelStream();
            }

            for (var i = 0; i < count; i++)
            {
                // Only the last event's position is returned; the others are learned from reads.
                var recorded = new ModelEvent(stream, model.Last + 1, i == count - 1 ? result.LastPosition : null, events[i]);
                model.Events.Add(recorded);
                model.VersionsById[events[i].MessageId] = recorded.Version;
                _all.Add(recorded);
            }

            _appends.Add(new ModelAppend(op, stream, expected, events, result));
        }

        private async Task DeleteAsync(int op, string stream)
        {
            var expected = PickExpectation(stream);
            var context = Context(op, $"delete {stream} expecting {expected}");
            var model = StreamOf(stream);
            var current = model?.Current ?? 0;
            ConcurrencyException? conflict = null;
            try
            {
                await _store.DeleteStreamAsync(stream, expected);
            }
            catch (ConcurrencyException ex)
            {
                conflict = ex;
            }

            if (expected.IsSatisfiedBy(current))
            {
                Check(conflict is null, context, $"the model deletes, the store conflicted: {conflict?.Message}");
                if (model is not null)
                {
                    model.DeletedUpTo = model.Last;
                    model.Deletions.Add(model.Last);
                }
            }
            else
            {
                Check(conflict is not null && conflict.Actual == current, context, $"the model conflicts at version {current}, the store {(conflict is null ? "deleted" : $"conflicted at {conflict.Actual}")}");
            }

            _log.Add($"{_doing} -> {(conflict is null ? "deleted" : "conflict")}");
            Saw(conflict is null ? "deleted" : "delete conflict");
        }

        private Task ReadStreamAsync(int op, string stream)
        {
            var last = (int)(StreamOf(stream)?.Last ?? 0);
            var direction = _random.Next(2) == 0 ? ReadDirection.Forward : ReadDirection.Backward;
            var from = direction == ReadDirection.Backward && _random.Next(3) == 0 ? long.MaxValue : _random.Next(1, last + 3);
            int[] counts = [1, 2, 3, 5, int.MaxValue];
            return ReadStreamAsync(op, stream, direction, from, Pick(counts));
        }

        private async Task ReadStreamAsync(int op, string stream, ReadDirection direction, long from, int maxCount)
        {
            var context = Context(op, $"read {stream} {direction} from {from} max {maxCount}");
            var model = StreamOf(stream);
            var visible = model?.Events.Where(e => e.Version > model.DeletedUpTo) ?? [];
            var expected = (direction == ReadDirection.Forward
                ? visible.Where(e => e.Version >= from)
                : visible.Where(e => e.Version <= from).Reverse()).Take(maxCount).ToList();
            var actual = new List<RecordedEvent>();
            await foreach (var recorded in _store.ReadStreamAsync(stream, direction, from, maxCount))
            {
                actual.Add(recorded);
            }

            CompareEvents(context, expected, actual);
            var version = await _store.GetStreamVersionAsync(stream);
            Check(version == (model?.Current ?? 0), context, $"the stream reads at version {version}, the model at {model?.Current ?? 0}");
            _log.Add($"{_doing} -> {actual.Count} events");
        }

        private Task ReadAllAsync(int op)
        {
            // From the start of the run or from a known position of one of its events.
            var after = _random.Next(-1, _all.Count);
            while (after >= 0 && _all[after].Position is null)
            {
                after--;
            }

            var filter = _random.Next(4) switch
            {
                0 => null,
                1 => EventFilter.ForCategory(Pick(_categories)),
                2 => EventFilter.ForEventTypes(_types.Where(_ => _random.Next(2) == 0).ToArray()),
                _ => new EventFilter { Category = Pick(_categories), EventTypes = [Pick(_types), Pick(_types)] },
            };
            int[] counts = [1, 2, 4, 7, int.MaxValue];
            return ReadAllAsync(op, after, filter, Pick(counts));
        }

        private async Task ReadAllAsync(int op, int after, EventFilter? filter, int maxCount)
        {
            var from = after < 0 ? _head : _all[after].Position!.Value;
            var description = filter is null ? "no filter" : $"category {filter.Category ?? "-"}, types [{string.Join(",", filter.EventTypes ?? [])}]";
            var context = Context(op, $"read $all after {from} ({description}) max {maxCount}");
            var matching = _all.Skip(after + 1).Where(e => e.Version > _model[e.Stream].DeletedUpTo && Matches(filter, e)).ToList();
            var actual = new List<RecordedEvent>();
            await foreach (var recorded in _store.ReadAllAsync(from, filter, maxCount))
            {
                actual.Add(recorded);
            }

            Check(actual.Count <= maxCount, context, $"{actual.Count} events returned, more than {maxCount}");
            Check(actual.Zip(actual.Skip(1)).All(p => p.First.Position < p.Second.Position) && actual.All(e => e.Position > from), context,
                $"positions [{string.Join(",", actual.Select(e => e.Position))}] are not strictly increasing after {from}");

            // Unfiltered, other tests sharing the store may interleave their events: only this run's are compared, and they
            // must be the model's first ones (all of them when the read stopped short of its count).
            var ours = filter is null ? actual.Where(e => _model.ContainsKey(e.Stream)).ToList() : actual;
            var expected = matching.Take(filter is null && actual.Count == maxCount ? ours.Count : maxCount).ToList();
            CompareEvents(context, expected, ours);
            var head = await _store.GetLastPositionAsync();
            var lastRead = actual.Count == 0 ? 0 : actual[^1].Position;
            Check(head >= lastRead, context, $"the last position {head} is below an event read at {lastRead}");
            _log.Add($"{_doing} -> {actual.Count} events");
        }

        private static bool Matches(EventFilter? filter, ModelEvent recorded) =>
            (filter?.Category is null || StreamName.GetCategory(recorded.Stream) == filter.Category)
            && (filter?.EventTypes is null || filter.EventTypes.Contains(recorded.Envelope.MessageType));

        // Compares stream, version, id, type and body in order; positions must agree with those already known, and the
        // others are learned here.
        private void CompareEvents(string context, List<ModelEvent> expected, List<RecordedEvent> actual)
        {
            for (var i = 0; i < Math.Max(expected.Count, actual.Count); i++)
            {
                var want = i < expected.Count ? Describe(expected[i]) : "nothing";
                var got = i < actual.Count ? Describe(actual[i]) : "nothing";
                Check(want == got, context, $"event {i} of the read: expected {want}, the store returned {got} (expected {expected.Count}, got {actual.Count})");
                Check(expected[i].Envelope.Body.Span.SequenceEqual(actual[i].Envelope.Body.Span), context, $"event {i} of the read ({got}) has another body");
                if (expected[i].Position is { } position)
                {
                    Check(position == actual[i].Position, context, $"event {i} of the read ({got}) is at position {actual[i].Position}, known at {position}");
                }
                else
                {
                    expected[i].Position = actual[i].Position;
                }
            }
        }

        private static string Describe(ModelEvent e) => $"{e.Stream}@{e.Version} {e.Envelope.MessageId.ToString()[^4..]} {e.Envelope.MessageType}";

        private static string Describe(RecordedEvent e) => $"{e.Stream}@{e.Version} {e.EventId.ToString()[^4..]} {e.EventType}";

        // The seed, the operation and the last ones before it, to start a failure's message (the first difference follows).
        private string Context(int op, string what)
        {
            _doing = $"op {op}: {what}";
            return string.Create(CultureInfo.InvariantCulture, $"seed {_seed}, {_doing}; the operations before it:{Environment.NewLine}{string.Join(Environment.NewLine, _log.TakeLast(15))}{Environment.NewLine}first difference");
        }
    }

    private abstract record Outcome
    {
        public sealed record Conflict(long Actual) : Outcome;

        public sealed record Known(AppendResult Result) : Outcome;

        public sealed record Written(long StreamVersion, int Count) : Outcome;
    }

    private sealed record ModelAppend(int Op, string Stream, ExpectedVersion Expected, Envelope[] Events, AppendResult Result);

    private sealed class ModelEvent(string stream, long version, long? position, Envelope envelope)
    {
        public string Stream { get; } = stream;

        public long Version { get; } = version;

        public long? Position { get; set; } = position;

        public Envelope Envelope { get; } = envelope;
    }

    private sealed class ModelStream
    {
        public List<ModelEvent> Events { get; } = [];

        public Dictionary<Guid, long> VersionsById { get; } = [];

        public HashSet<long> Deletions { get; } = [];

        public long DeletedUpTo { get; set; }

        public long Last => Events.Count;

        public long Current => Last > DeletedUpTo ? Last : 0;

        // A NoStream append lands at the first version of a life of the stream: 1, or right after a deletion.
        public long StartOfLife(long version) => version == 1 || Deletions.Contains(version - 1) ? version : -1;
    }
}
