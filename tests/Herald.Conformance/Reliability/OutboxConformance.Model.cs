using System.Globalization;
using System.Text;
using Herald.Messages;
using Herald.Persistence;
using Herald.Reliability.Outbox;
using Herald.Transport;
using Herald.Transport.InMemory;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Time.Testing;
using Xunit;

namespace Herald.Conformance.Reliability;

/// <summary>
/// The outbox and its relay against a reference model: seeded units of work enlist sends and publishes (some with a
/// partition key, some delayed) and commit or roll back, while the relay sends them through a transport that fails sends
/// on a seeded schedule (before the broker took the message, or after), restarts at seeded points on the same store, and
/// a fake clock moves on for polls, back-offs, delays and cleanup.
/// </summary>
public abstract partial class OutboxStoreConformance
{
    private static readonly TimeSpan ModelMinBackoff = TimeSpan.FromMilliseconds(100);
    private static readonly TimeSpan ModelMaxBackoff = TimeSpan.FromMilliseconds(800);
    private static readonly TimeSpan ModelRetention = TimeSpan.FromSeconds(2);

    /// <summary>Units of work each seed of the outbox model test runs; lower it for a slow store.</summary>
    protected virtual int OutboxModelUnits => 40;

    /// <summary>The seeds of the outbox model test: fixed, so a failure names one that reproduces it.</summary>
    public static TheoryData<int> OutboxModelSeeds => [1, 2, 3, 4];

    /// <summary>
    /// Every committed message is delivered at least once and none of a rolled-back unit; per partition key, no message is
    /// sent before every earlier one of its key was sent (also across a failure and its back-off); a message whose send
    /// succeeded is never sent again, so a duplicate comes only from a failure after the broker took it; a failed send
    /// is counted on its row and tried again no earlier than its back-off; a delayed message never arrives before its due
    /// time; cleanup deletes no row before it was sent.
    /// </summary>
    [Theory]
    [MemberData(nameof(OutboxModelSeeds))]
    public async Task Model_UnitsOfWorkThroughAFailingTransportAndRelayRestarts_MatchTheReferenceModel(int seed)
    {
        var store = await CreateStoreAsync();
        var run = new OutboxModelRun(seed, store);
        try
        {
            await run.StartRelayAsync();
            for (var unit = 0; unit < OutboxModelUnits; unit++)
            {
                var roll = run.Random.Next(100);
                if (roll < 10 || unit == OutboxModelUnits / 2)
                {
                    await run.RestartRelayAsync(unit);
                }

                var unitOfWork = await BeginUnitOfWorkAsync(store);
                await run.RunUnitAsync(unit, unitOfWork);
                if (roll is >= 10 and < 30)
                {
                    // Mid-run, while the relay works on the unit just committed.
                    await run.CheckStoreAsync($"unit {unit}");
                }

                run.Log($"clock +{await run.AdvanceAsync()} ms");
                if (unit % 15 == 14)
                {
                    await run.DrainAndCheckAsync($"checkpoint after unit {unit}");
                }
            }

            await run.DrainAndCheckAsync("end");
            await run.CleanedUpAsync();
            run.AssertCoverage();
        }
        finally
        {
            await run.DisposeAsync();
        }
    }

    private enum ModelFailure
    {
        /// <summary>The send throws before the broker took the message.</summary>
        Before,

        /// <summary>The broker took the message, then the send throws (a lost acknowledgement): one more delivery.</summary>
        After,
    }

    private sealed record ModelMessage(int Seq, Guid Id, Guid RowId, string? Key, bool Topic, DateTimeOffset? DeliverAt, ModelFailure[] Failures);

    /// <summary>One send or publish the relay made: when, with which delay, and how it ended (null: it succeeded).</summary>
    private sealed record ModelAttempt(int Seq, Guid Id, string Destination, bool Topic, TimeSpan? Delay, DateTimeOffset At, ModelFailure? Failure, bool DuringStop)
    {
        public bool Reached => Failure is null or ModelFailure.After;
    }

    /// <summary>A transport that records every send of the run's destinations and fails them on the messages' schedules.</summary>
    private sealed class ModelTransport(OutboxModelRun run, TransportCapabilities capabilities) : ITransport
    {
        public string Name => "outbox-model";

        public TransportCapabilities Capabilities => capabilities;

        public ValueTask DeclareQueueAsync(string queue, CancellationToken cancellationToken = default) => ValueTask.CompletedTask;

        public ValueTask BindAsync(string topic, string queue, CancellationToken cancellationToken = default) => ValueTask.CompletedTask;

        public ValueTask SendAsync(string queue, Envelope envelope, SendOptions? options = null, CancellationToken cancellationToken = default) =>
            run.OnSend(queue, topic: false, envelope, options);

        public ValueTask PublishAsync(string topic, Envelope envelope, SendOptions? options = null, CancellationToken cancellationToken = default) =>
            run.OnSend(topic, topic: true, envelope, options);

        public ValueTask<ITransportConsumer> ConsumeAsync(string queue, ConsumerOptions options, DeliveryHandler handler, CancellationToken cancellationToken = default) =>
            throw new NotSupportedException("The model's relay host consumes nothing.");

        public ValueTask DisposeAsync() => ValueTask.CompletedTask;
    }

    private sealed class OutboxModelRun(int seed, IOutboxStore store) : IAsyncDisposable
    {
        private const int MaxFailures = 3;
        private readonly string _queue = "model-q-" + Guid.NewGuid().ToString("N")[..10];
        private readonly string _topic = "model-t-" + Guid.NewGuid().ToString("N")[..10];
        private readonly string _keyPrefix = "model-k-" + Guid.NewGuid().ToString("N")[..8] + "-";
        private readonly FakeTimeProvider _clock = new(BaseTime.AddDays(1));
        private readonly Lock _gate = new();
        private readonly TestOutputLogger _relayLog = new();
        private readonly List<ModelAttempt> _attempts = [];
        private readonly Dictionary<Guid, ModelMessage> _messages = [];
        private readonly List<ModelMessage> _committed = [];
        private readonly List<ModelMessage> _rolledBack = [];
        private readonly Dictionary<string, int> _seen = [];
        private readonly List<string> _log = [];
        private IHost? _host;
        private int _generation;
        private bool _stopping;

        public Random Random { get; } = new(seed);

        public void Log(string line) => _log.Add(line);

        public async Task StartRelayAsync()
        {
            _generation++;
            var capabilities = new InMemoryTransport(InMemoryTransportOptions.Default, _clock).Capabilities;
            var transport = new ModelTransport(this, capabilities);
            var builder = Host.CreateApplicationBuilder();
            builder.Logging.ClearProviders();
            builder.Logging.AddProvider(_relayLog);
            builder.Services.AddSingleton<TimeProvider>(_clock);
            builder.Services.AddHerald(h => h
                .Configure(o =>
                {
                    o.EndpointName = _queue;
                    o.StartConsumer = false;
                })
                .UseTransport(_ => transport)
                .UseOutbox(o =>
                {
                    o.PollInterval = TimeSpan.FromMilliseconds(100);
                    o.BatchSize = 1 + Random.Next(6);
                    o.MinBackoff = ModelMinBackoff;
                    o.MaxBackoff = ModelMaxBackoff;
                    o.Retention = ModelRetention;
                    o.CleanupInterval = TimeSpan.FromMilliseconds(500);
                }));
            builder.Services.AddSingleton(store);
            _host = builder.Build();
            await _host.StartAsync();
            Log($"relay {_generation} started");
        }

        public async Task RestartRelayAsync(int unit)
        {
            // The relay's stop makes its last pass over what is due; a new relay then goes on over the same store.
            Volatile.Write(ref _stopping, true);
            await _host!.StopAsync();
            _host.Dispose();
            _host = null;
            Volatile.Write(ref _stopping, false);
            Log($"unit {unit}: relay {_generation} stopped");

            // A send that fails once the stop began is the stop's: the relay ends as stopped (and makes its last pass),
            // it does not fail as a background service.
            Check(!_relayLog.ToString().Contains("BackgroundService failed", StringComparison.Ordinal), $"unit {unit}", $"relay {_generation} failed at its stop");
            Saw("restart");
            await StartRelayAsync();
        }

        public async Task RunUnitAsync(int unit, IUnitOfWork unitOfWork)
        {
            var rows = new List<OutboxMessage>();
            var messages = new List<ModelMessage>();
            var count = Random.Next(4);
            var now = _clock.GetUtcNow();
            for (var i = 0; i < count; i++)
            {
                var topic = Random.Next(3) == 0;
                var key = Random.Next(3) == 0 ? null : _keyPrefix + Random.Next(3).ToString(CultureInfo.InvariantCulture);
                DateTimeOffset? deliverAt = Random.Next(5) == 0 ? now.AddMilliseconds(Random.Next(1, 3000)) : null;
                var failures = Enumerable.Range(0, Random.Next(10) switch { < 6 => 0, < 8 => 1, 8 => 2, _ => MaxFailures })
                    .Select(_ => Random.Next(2) == 0 ? ModelFailure.Before : ModelFailure.After)
                    .ToArray();
                var envelope = TestEnvelopes.Create(topic ? "model-event" : "model-command", now, key) with { DeliveryAttempt = 0 };
                var row = new OutboxMessage
                {
                    Id = Guid.CreateVersion7(now),
                    DestinationKind = topic ? OutboxDestinationKind.Topic : OutboxDestinationKind.Queue,
                    Destination = topic ? _topic : _queue,
                    Envelope = envelope,
                    CreatedAt = now,
                    PartitionKey = key,
                    DeliverAt = deliverAt,
                };
                rows.Add(row);
                messages.Add(new ModelMessage(-1, envelope.MessageId, row.Id, key, topic, deliverAt, failures));
            }

            var commit = Random.Next(4) != 0;
            lock (_gate)
            {
                // Known to the transport before the rows can be fetched, with their failure schedules.
                foreach (var message in messages)
                {
                    _messages[message.Id] = message;
                }
            }

            if (rows.Count > 0)
            {
                await store.AddAsync(rows, unitOfWork);
            }

            if (commit)
            {
                await unitOfWork.CommitAsync();
                lock (_gate)
                {
                    foreach (var message in messages)
                    {
                        var committed = message with { Seq = _committed.Count };
                        _messages[message.Id] = committed;
                        _committed.Add(committed);
                    }
                }
            }
            else
            {
                await unitOfWork.RollbackAsync();
                _rolledBack.AddRange(messages);
            }

            if (unitOfWork is IAsyncDisposable disposable)
            {
                await disposable.DisposeAsync();
            }
            Saw(commit ? "commit" : "rollback");
            Log($"unit {unit}: {(commit ? "commit" : "rollback")} [{string.Join(", ", messages.Select(Describe))}]");
        }

        /// <summary>Moves the clock on by a seeded step, in pieces of at most 100 ms, so polls, back-offs and delays elapse.</summary>
        public async Task<int> AdvanceAsync()
        {
            var total = Random.Next(0, 400);
            for (var left = total; left > 0; left -= 100)
            {
                _clock.Advance(TimeSpan.FromMilliseconds(Math.Min(100, left)));
                await Task.Yield();
            }

            return total;
        }

        public ValueTask OnSend(string destination, bool topic, Envelope envelope, SendOptions? options)
        {
            if (destination != _queue && destination != _topic)
            {
                // Rows other tests of the suite left pending in the store: taken.
                return ValueTask.CompletedTask;
            }

            ModelFailure? failure;
            lock (_gate)
            {
                var done = _attempts.Count(a => a.Id == envelope.MessageId && a.Failure is not null);
                var failures = _messages.TryGetValue(envelope.MessageId, out var message) ? message.Failures : [];
                failure = done < failures.Length ? failures[done] : null;
                _attempts.Add(new ModelAttempt(_attempts.Count, envelope.MessageId, destination, topic, options?.Delay, _clock.GetUtcNow(), failure, Volatile.Read(ref _stopping)));
            }

            return failure is null
                ? ValueTask.CompletedTask
                : ValueTask.FromException(new InvalidOperationException($"The model broker fails this send ({failure})."));
        }

        /// <summary>Moves the clock on until every committed message was sent and marked, then checks everything.</summary>
        public async Task DrainAndCheckAsync(string context)
        {
            var ids = _committed.Select(m => m.Id).ToList();
            try
            {
                await Eventually.UntilAsync(
                    async () =>
                    {
                        if (ids.Any(id => !Succeeded(id)))
                        {
                            _clock.Advance(TimeSpan.FromMilliseconds(50));
                            return false;
                        }

                        foreach (var message in _committed)
                        {
                            // Gone is sent too: cleanup deleted it (the store check asserts it was sent first).
                            if (await store.GetAsync(message.RowId) is { SentAt: null })
                            {
                                _clock.Advance(TimeSpan.FromMilliseconds(50));
                                return false;
                            }
                        }

                        return true;
                    },
                    "every committed message is sent and marked",
                    TimeSpan.FromSeconds(30));
            }
            catch (TimeoutException ex)
            {
                var missing = ids.Where(id => !Succeeded(id)).Select(id => Describe(_messages[id]));
                Fail(context, $"{ex.Message} Not sent: {string.Join(", ", missing)}");
            }

            await CheckStoreAsync(context);
            CheckAttempts(context, drained: true);
            Log($"{context}: {_committed.Count} committed, {_rolledBack.Count} rolled back, {Duplicates()} duplicate deliveries");
        }

        /// <summary>
        /// What the store holds of the run's messages: a row of a rolled-back unit never; a committed row is pending, sent,
        /// or deleted only once it was sent (read before the transport's record, which the send writes before its mark).
        /// </summary>
        public async Task CheckStoreAsync(string context)
        {
            foreach (var message in _rolledBack)
            {
                Check(await store.GetAsync(message.RowId) is null, context, $"the row of rolled-back {Describe(message)} is in the store");
            }

            List<ModelMessage> committed;
            lock (_gate)
            {
                committed = [.. _committed];
            }

            foreach (var message in committed)
            {
                var row = await store.GetAsync(message.RowId);
                if (row is null || row.SentAt is not null)
                {
                    Check(Succeeded(message.Id), context, $"{Describe(message)} was {(row is null ? "deleted" : "marked sent")} but never sent");
                    if (row is null)
                    {
                        Saw("deleted");
                    }
                }
                else
                {
                    Saw("pending row");
                }
            }

            CheckAttempts(context, drained: false);
        }

        /// <summary>Moves the clock past the retention until cleanup deleted every row of the run (all were sent).</summary>
        public async Task CleanedUpAsync()
        {
            var rows = _committed.Select(m => m.RowId).ToList();
            await Eventually.UntilAsync(
                async () =>
                {
                    foreach (var row in rows)
                    {
                        if (await store.GetAsync(row) is not null)
                        {
                            _clock.Advance(TimeSpan.FromMilliseconds(200));
                            return false;
                        }
                    }

                    return true;
                },
                $"seed {seed}: cleanup deletes every sent row of the run once past the retention",
                TimeSpan.FromSeconds(30));
        }

        public void AssertCoverage()
        {
            string[] kinds = ["commit", "rollback", "restart", "fail Before", "fail After", "key held back", "delayed", "deleted", "pending row"];
            var missing = kinds.Where(k => _seen.GetValueOrDefault(k) == 0).ToArray();
            Check(missing.Length == 0, "coverage", $"the run never met {string.Join(", ", missing)} (met {string.Join(", ", _seen.Select(p => $"{p.Key} {p.Value}"))})");
        }

        public async ValueTask DisposeAsync()
        {
            if (_host is { } host)
            {
                await host.StopAsync();
                host.Dispose();
            }
        }

        private void CheckAttempts(string context, bool drained)
        {
            List<ModelAttempt> attempts;
            List<ModelMessage> committed;
            lock (_gate)
            {
                attempts = [.. _attempts];
                committed = [.. _committed];
            }

            var rolledBack = _rolledBack.Select(m => m.Id).ToHashSet();
            var byId = attempts.GroupBy(a => a.Id).ToDictionary(g => g.Key, g => g.ToList());
            foreach (var attempt in attempts)
            {
                Check(!rolledBack.Contains(attempt.Id), context, $"attempt {attempt.Seq} sent {attempt.Id} of a rolled-back unit");
            }

            foreach (var message in committed)
            {
                var own = byId.GetValueOrDefault(message.Id) ?? [];
                var what = Describe(message);
                Check(!drained || own.Any(a => a.Failure is null), context, $"{what} was never sent");
                for (var i = 0; i < own.Count; i++)
                {
                    var attempt = own[i];
                    Check(attempt.Destination == (message.Topic ? _topic : _queue) && attempt.Topic == message.Topic, context, $"{what} went to {attempt.Destination} (topic {attempt.Topic})");

                    // The schedule, in order: its failures, then one success and nothing after it.
                    var expected = i < message.Failures.Length ? message.Failures[i] : (ModelFailure?)null;
                    Check(i <= message.Failures.Length && attempt.Failure == expected, context, $"{what}: attempt {i + 1} (#{attempt.Seq}) came after its successful send");
                    if (attempt.Failure is { } failure)
                    {
                        Saw($"fail {failure}");
                    }

                    if (i > 0 && !own[i - 1].DuringStop && !attempt.DuringStop)
                    {
                        // A failed send waits out its own back-off (doubling from MinBackoff) before it is tried again; one
                        // the relay's stop cut short (the send, or the record of its failure) is made again at once, in the
                        // last pass or by the next relay.
                        // A failure whose record a stop cut short is not counted on the row: then only the least back-off holds.
                        var backoff = own.Take(i).Any(a => a.DuringStop) ? ModelMinBackoff : RowBackoff(i);
                        Check(attempt.At >= own[i - 1].At + backoff, context,
                            $"{what}: attempt {i + 1} at {Time(attempt.At)}, {(attempt.At - own[i - 1].At).TotalMilliseconds} ms after failure {i}, before its back-off of {backoff.TotalMilliseconds} ms");
                    }

                    if (attempt.Reached)
                    {
                        // Never delivered before its due time: the delay asked for covers what is left of it.
                        var arrives = attempt.At + (attempt.Delay ?? TimeSpan.Zero);
                        Check(message.DeliverAt is not { } due || arrives >= due, context, $"{what}: attempt {i + 1} arrives at {Time(arrives)}, before it is due");
                        Check(message.DeliverAt is not null || attempt.Delay is null, context, $"{what}: sent with a delay of {attempt.Delay}");
                        if (message.DeliverAt is not null)
                        {
                            Saw("delayed");
                        }
                    }
                }
            }

            // Per partition key: no message is tried before every earlier one of its key was sent (a failed one holds back
            // the later ones until its retry succeeds).
            foreach (var key in committed.Where(m => m.Key is not null).GroupBy(m => m.Key!))
            {
                var earlierSent = -1;
                ModelMessage? previous = null;
                foreach (var message in key)
                {
                    var own = byId.GetValueOrDefault(message.Id) ?? [];
                    if (own.Count == 0)
                    {
                        previous = message;
                        earlierSent = int.MaxValue;
                        continue;
                    }

                    Check(own[0].Seq > earlierSent, context,
                        $"{Describe(message)} was tried (#{own[0].Seq}) before the earlier {(previous is null ? "?" : Describe(previous))} of its key was sent");
                    if (previous is not null && previous.Failures.Length > 0)
                    {
                        Saw("key held back");
                    }

                    earlierSent = own.FirstOrDefault(a => a.Failure is null)?.Seq ?? int.MaxValue;
                    previous = message;
                }
            }
        }

        private bool Succeeded(Guid id)
        {
            lock (_gate)
            {
                return _attempts.Any(a => a.Id == id && a.Failure is null);
            }
        }

        private int Duplicates()
        {
            lock (_gate)
            {
                return _attempts.Count(a => a.Failure == ModelFailure.After);
            }
        }

        private static TimeSpan RowBackoff(int attempts)
        {
            var backoff = ModelMinBackoff;
            for (var i = 1; i < attempts && backoff < ModelMaxBackoff; i++)
            {
                backoff *= 2;
            }

            return backoff > ModelMaxBackoff ? ModelMaxBackoff : backoff;
        }

        private string Describe(ModelMessage m) =>
            $"{(m.Topic ? "publish" : "send")} {m.Id.ToString()[^6..]}"
            + (m.Seq >= 0 ? $" #{m.Seq}" : string.Empty)
            + (m.Key is { } k ? $" key {k[_keyPrefix.Length..]}" : string.Empty)
            + (m.DeliverAt is { } at ? $" due {Time(at)}" : string.Empty)
            + (m.Failures.Length > 0 ? $" fails {string.Join("/", m.Failures)}" : string.Empty);

        private static string Time(DateTimeOffset at) => at.ToString("HH:mm:ss.fff", CultureInfo.InvariantCulture);

        private void Saw(string kind) => _seen[kind] = _seen.GetValueOrDefault(kind) + 1;

        private void Check(bool condition, string context, string difference)
        {
            if (!condition)
            {
                Fail(context, difference);
            }
        }

        private void Fail(string context, string difference)
        {
            var text = new StringBuilder().Append(CultureInfo.InvariantCulture, $"seed {seed}, {context}: {difference}").AppendLine();
            text.AppendLine("operations:");
            foreach (var line in _log)
            {
                text.AppendLine(line);
            }

            text.AppendLine("attempts:");
            lock (_gate)
            {
                foreach (var a in _attempts)
                {
                    text.AppendLine(CultureInfo.InvariantCulture, $"#{a.Seq} {a.Id.ToString()[^6..]} at {Time(a.At)} delay {a.Delay?.TotalMilliseconds} {a.Failure?.ToString() ?? "ok"}{(a.DuringStop ? " (stopping)" : string.Empty)}");
                }
            }

            text.AppendLine("relay log:").AppendLine(_relayLog.ToString());
            Assert.Fail(text.ToString());
        }
    }
}
