using System.Collections.Concurrent;
using System.Globalization;
using Herald.Conformance.Reliability;
using Herald.Messages;
using Herald.Transport;
using Microsoft.Extensions.Time.Testing;
using Xunit;
using Xunit.Sdk;

namespace Herald.Conformance.Transport;

public abstract partial class LeasedQueueConformance
{
    // What the pipeline does at the transport's level: a failing attempt below this is retried, at it the message is dead-lettered.
    private const int ModelMaxAttempts = 3;

    /// <summary>Operations each seed of the queue model test runs.</summary>
    protected virtual int QueueModelOperations => 40;

    /// <summary>The seeds of the queue model test: fixed, so a failure names one that reproduces it.</summary>
    public static TheoryData<int> QueueModelSeeds => [1, 2, 3, 4];

    /// <summary>
    /// The lease of the model test, on its fake clock: long enough that a claim's round trip, which the clock does not wait
    /// for, never outlives it while the clock moves on in steps (a lapsed claim counts an attempt, as documented).
    /// </summary>
    protected static TimeSpan ModelLease { get; } = TimeSpan.FromSeconds(4);

    /// <summary>Opens an instance of the queue on the engine as another process would, with <paramref name="lease"/>, on <paramref name="clock"/>.</summary>
    protected abstract Task<ITransport> OpenInstanceAsync(TimeProvider clock, TimeSpan lease);

    /// <summary>The leased messages of the queue (its rows with a lease owner) and when each lease runs out.</summary>
    protected abstract Task<IReadOnlyDictionary<Guid, DateTimeOffset>> LeasesAsync(string queue);

    /// <summary>
    /// Drives three queues on two instances sharing a fake clock with a seeded sequence of sends (delayed, keyed, in concurrent
    /// batches), consumers started and stopped on either instance (two on one queue at times), handlers whose outcome is seeded
    /// (succeed, throw, nack with a delay, dead-letter at the third failing attempt, run for several leases) and consumer
    /// crashes (a consumer on a clock of its own that stops, so it never renews), and checks every delivery and the end state
    /// against a plain reference model of the documented rules (docs/sqlite.md, docs/postgres.md): nothing lost or delivered
    /// twice, nothing before its due time or its crashed lease's end, a running handler keeps its message, attempts counted by
    /// nacks and expired leases, dead letters with their reason and attempt, per-key order, and the rows left in each queue.
    /// </summary>
    [Theory]
    [MemberData(nameof(QueueModelSeeds))]
    public async Task Model_SeededSendsConsumersAndHandlerOutcomes_MatchTheReferenceModel(int seed)
    {
        var run = new QueueModelRun(this, seed);
        try
        {
            await run.StartAsync();
            for (var op = 0; op < QueueModelOperations; op++)
            {
                await run.StepAsync(op);
            }

            await run.FinishAsync();
        }
        catch (Exception e) when (e is not XunitException)
        {
            throw new XunitException(run.Describe(e.ToString()));
        }
        catch (XunitException e)
        {
            throw new XunitException(run.Describe(e.Message));
        }
        finally
        {
            await run.DisposeAsync();
        }
    }

    private enum ModelState
    {
        Pending,
        Hung,
        Crashed,
        Acked,
        DeadLettered,
    }

    private sealed class ModelMessage(Guid id, int queue, string? key, int sequence, DateTimeOffset visibleAt, int seed)
    {
        public Guid Id { get; } = id;

        public int Queue { get; } = queue;

        public string? Key { get; } = key;

        public int Sequence { get; } = sequence;

        // Not before this (the earliest visible_at the engine may have written)...
        public DateTimeOffset VisibleAt { get; set; } = visibleAt;

        // ...and surely visible from this (the latest it may have written; MaxValue while a nack is on its way).
        public DateTimeOffset VisibleBy { get; set; } = visibleAt;

        public Random Outcomes { get; } = new(seed);

        public ModelState State { get; set; }

        public int Attempt { get; set; } = 1;

        public int Active { get; set; }

        public int Acks { get; set; }

        public DateTimeOffset LeaseRunsOut { get; set; }

        public DateTimeOffset HangUntil { get; set; }

        public TaskCompletionSource? HangGate { get; set; }

        public string? HeldBy { get; set; }

        public string? Reason { get; set; }

        public int DeadLetterAttempt { get; set; }

        public bool Unsettled => State is not (ModelState.Acked or ModelState.DeadLettered);
    }

    private sealed class ModelConsumer(string name, ITransport? owner)
    {
        public string Name { get; } = name;

        // Set once ConsumeAsync returned; the handler does not need it, so a delivery before that is fine.
        public ITransportConsumer Consumer { get; set; } = null!;

        // A crashed consumer's own instance (on its own stopped clock), disposed with it.
        public ITransport? Owner { get; } = owner;

        public bool Stopping { get; set; }
    }

    private sealed class QueueModelRun(LeasedQueueConformance suite, int seed) : IAsyncDisposable
    {
        private static readonly TimeSpan Step = TimeSpan.FromMilliseconds(100);
        private static readonly TimeSpan[] SendDelays = [TimeSpan.Zero, TimeSpan.Zero, TimeSpan.FromMilliseconds(300), TimeSpan.FromSeconds(1), TimeSpan.FromSeconds(2)];
        private static readonly TimeSpan[] RetryDelays = [TimeSpan.FromMilliseconds(200), TimeSpan.FromMilliseconds(700), TimeSpan.FromSeconds(1.5)];
        private static readonly string?[] Keys = [null, null, "k1", "k2"];
        private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(20);

        private readonly Random _random = new(seed);
        private readonly FakeTimeProvider _clock = new(new DateTimeOffset(2030, 1, 1, 0, 0, 0, TimeSpan.Zero));
        private readonly Lock _gate = new();
        private readonly Dictionary<Guid, ModelMessage> _messages = [];
        private readonly Dictionary<(int Queue, int Instance), ModelConsumer> _consumers = [];
        private readonly List<(int Queue, ModelMessage Message, ModelConsumer Consumer)> _crashes = [];
        private readonly ConcurrentQueue<string> _log = new();
        private readonly ConcurrentQueue<string> _violations = new();
        private readonly ConcurrentDictionary<string, int> _seen = new();
        private readonly string[] _queues = [.. Enumerable.Range(0, 3).Select(i => $"model-{seed}-{i}-{Guid.NewGuid().ToString("N")[..6]}")];
        private ITransport[] _instances = [];
        private int _sequence;
        private string _doing = "starting";

        public async Task StartAsync() => _instances = [await suite.OpenInstanceAsync(_clock, ModelLease), await suite.OpenInstanceAsync(_clock, ModelLease)];

        public async Task StepAsync(int op)
        {
            var queue = _random.Next(_queues.Length);
            var instance = _random.Next(2);
            var roll = _random.Next(100);
            if (roll < 30)
            {
                var key = Keys[_random.Next(Keys.Length)];
                var delay = SendDelays[_random.Next(SendDelays.Length)];
                Doing(op, $"send to q{queue} on {Name(instance)} key {key ?? "-"} delay {delay.TotalMilliseconds} ms");
                var (message, envelope) = Register(queue, key, delay);
                await _instances[instance].SendAsync(_queues[queue], envelope, delay > TimeSpan.Zero ? new SendOptions { Delay = delay } : null);
                Note($"  sent m{message.Sequence}");
            }
            else if (roll < 42)
            {
                var count = _random.Next(2, 6);
                Doing(op, $"batch of {count} concurrent sends to q{queue} on {Name(instance)}");
                var sends = Enumerable.Range(0, count).Select(_ => Register(queue, null, TimeSpan.Zero)).ToList();
                await Task.WhenAll(sends.Select(s => _instances[instance].SendAsync(_queues[queue], s.Envelope).AsTask()));
                Note($"  sent {string.Join(", ", sends.Select(s => "m" + s.Message.Sequence))}");
            }
            else if (roll < 62)
            {
                Doing(op, $"start a consumer of q{queue} on {Name(instance)}");
                if (!_consumers.ContainsKey((queue, instance)))
                {
                    var started = new ModelConsumer($"{Name(instance)}{op}", owner: null);
                    started.Consumer = await _instances[instance].ConsumeAsync(
                        _queues[queue], new ConsumerOptions { MaxConcurrency = 3, Prefetch = 2 }, (d, ct) => HandleAsync(queue, started, d, ct));
                    lock (_gate)
                    {
                        _consumers[(queue, instance)] = started;
                    }
                }
            }
            else if (roll < 72)
            {
                Doing(op, $"stop the consumer of q{queue} on {Name(instance)}");
                ModelConsumer? stopping;
                lock (_gate)
                {
                    // A consumer whose handler runs for leases stops later: a graceful stop waits for it.
                    if (_consumers.TryGetValue((queue, instance), out stopping) && _messages.Values.Any(m => m.State == ModelState.Hung && m.HeldBy == stopping.Name))
                    {
                        stopping = null;
                    }

                    if (stopping is not null)
                    {
                        stopping.Stopping = true;
                    }
                }

                if (stopping is not null)
                {
                    await stopping.Consumer.StopAsync().WaitAsync(Deadline);
                    await stopping.Consumer.DisposeAsync();
                    lock (_gate)
                    {
                        _consumers.Remove((queue, instance));
                    }
                }
            }
            else if (roll < 90)
            {
                var by = TimeSpan.FromMilliseconds(_random.Next(1, 26) * 100);
                Doing(op, $"advance the clock {by.TotalMilliseconds} ms");
                await AdvanceAsync(by);
            }
            else
            {
                Doing(op, $"crash a consumer of q{queue}");
                await CrashAsync(op, queue);
            }

            await SettleAsync();
            await CheckDepthAsync();
        }

        public async Task FinishAsync()
        {
            Doing(QueueModelRunEnd, "finish: consume every queue until every message is settled");
            for (var queue = 0; queue < _queues.Length; queue++)
            {
                if (!_consumers.ContainsKey((queue, 0)) && !_consumers.ContainsKey((queue, 1)))
                {
                    var q = queue;
                    var started = new ModelConsumer($"A-final{q}", owner: null);
                    started.Consumer = await _instances[0].ConsumeAsync(_queues[q], new ConsumerOptions { MaxConcurrency = 3, Prefetch = 2 }, (d, ct) => HandleAsync(q, started, d, ct));
                    lock (_gate)
                    {
                        _consumers[(q, 0)] = started;
                    }
                }
            }

            await Eventually.UntilAsync(
                async () =>
                {
                    lock (_gate)
                    {
                        if (!_messages.Values.Any(m => m.Unsettled))
                        {
                            return true;
                        }
                    }

                    await AdvanceAsync(Step);
                    return false;
                },
                () => "the messages are all settled (pending: " + Pending() + ")",
                Deadline * 2);

            await SettleAsync();
            foreach (var consumer in _consumers.Values.ToList())
            {
                await consumer.Consumer.DisposeAsync();
            }

            _consumers.Clear();
            await ResolveCrashesAsync(all: true);
            AssertNoViolations();

            for (var queue = 0; queue < _queues.Length; queue++)
            {
                Assert.Equal(0L, await suite.CountQueuedAsync(_queues[queue]));
                var letters = new List<NativeDeadLetter>();
                await ((INativeDeadLetterSource)_instances[_random.Next(2)]).DrainDeadLettersAsync(_queues[queue], (l, _) =>
                {
                    letters.Add(l);
                    return ValueTask.CompletedTask;
                });
                var expected = _messages.Values.Where(m => m.Queue == queue && m.State == ModelState.DeadLettered)
                    .Select(m => $"m{m.Sequence} attempt {m.DeadLetterAttempt}: {m.Reason}").Order(StringComparer.Ordinal);
                var actual = letters.Select(l => $"m{Sequence(l.Envelope.MessageId)} attempt {l.Envelope.DeliveryAttempt}: {l.Reason}").Order(StringComparer.Ordinal);
                Assert.Equal(expected, actual);
            }

            Assert.All(_messages.Values.Where(m => m.State == ModelState.Acked), m => Assert.Equal(1, m.Acks));
            Note($"coverage: {string.Join(", ", _seen.OrderBy(p => p.Key, StringComparer.Ordinal).Select(p => $"{p.Key} {p.Value}"))}");
            Assert.True(_seen.GetValueOrDefault("succeed") > 0, "the run handled too little to mean anything");
        }

        public string Describe(string failure) =>
            string.Create(CultureInfo.InvariantCulture, $"seed {seed}, {_doing}, at +{Elapsed()}: {failure}{Environment.NewLine}the log before it:{Environment.NewLine}{string.Join(Environment.NewLine, _log.TakeLast(60))}");

        public async ValueTask DisposeAsync()
        {
            foreach (var hang in _messages.Values.Select(m => m.HangGate))
            {
                hang?.TrySetResult();
            }

            foreach (var consumer in _consumers.Values.Concat(_crashes.Select(c => c.Consumer)))
            {
                await consumer.Consumer.DisposeAsync().AsTask().WaitAsync(Deadline);
                if (consumer.Owner is { } owner)
                {
                    await owner.DisposeAsync();
                }
            }

            foreach (var instance in _instances)
            {
                await instance.DisposeAsync();
            }
        }

        private const int QueueModelRunEnd = -1;

        private static string Name(int instance) => instance == 0 ? "A" : "B";

        private (ModelMessage Message, Envelope Envelope) Register(int queue, string? key, TimeSpan delay)
        {
            var envelope = TestEnvelopes.Create(partitionKey: key);
            lock (_gate)
            {
                var sequence = ++_sequence;
                var message = new ModelMessage(envelope.MessageId, queue, key, sequence, _clock.GetUtcNow() + delay, (seed * 100_003) + sequence);
                _messages[message.Id] = message;
                return (message, envelope);
            }
        }

        private int Sequence(Guid id)
        {
            lock (_gate)
            {
                return _messages.TryGetValue(id, out var m) ? m.Sequence : -1;
            }
        }

        /// <summary>Every consumer's handler: checks the delivery against the model, then does what the message's seed says.</summary>
        private async ValueTask HandleAsync(int queue, ModelConsumer consumer, Delivery delivery, CancellationToken cancellationToken)
        {
            string outcome;
            var delay = TimeSpan.Zero;
            ModelMessage? message;
            lock (_gate)
            {
                var now = _clock.GetUtcNow();
                if (!_messages.TryGetValue(delivery.Envelope.MessageId, out message))
                {
                    Violation($"{consumer.Name} got a message never sent: {delivery.Envelope.MessageId}");
                    return;
                }

                var what = $"m{message.Sequence} (q{queue}, key {message.Key ?? "-"}) attempt {delivery.Envelope.DeliveryAttempt} to {consumer.Name} at +{Elapsed()}";
                if (message.Queue != queue)
                {
                    Violation($"{what}: sent to q{message.Queue}");
                }

                if (!message.Unsettled)
                {
                    Violation($"{what}: delivered again after it was {message.State}");
                }

                if (message.State == ModelState.Hung)
                {
                    Violation($"{what}: delivered while {message.HeldBy}'s handler still ran it under a renewed lease");
                }

                if (message.State == ModelState.Crashed && now < message.LeaseRunsOut)
                {
                    Violation($"{what}: delivered before the crashed consumer's lease ran out at +{Elapsed(message.LeaseRunsOut)}");
                }

                if (now < message.VisibleAt)
                {
                    Violation($"{what}: delivered before its due time +{Elapsed(message.VisibleAt)}");
                }

                if (delivery.Envelope.DeliveryAttempt != message.Attempt)
                {
                    Violation($"{what}: the model counts attempt {message.Attempt}");
                }

                // Claimed (maybe a few clock steps before its handler started) once it was due: an older message of its key that is
                // unsettled still and was surely visible by then was visible at the claim, which it must have held back.
                var dueSince = message.State == ModelState.Crashed && message.LeaseRunsOut > message.VisibleAt ? message.LeaseRunsOut : message.VisibleAt;
                if (message.Key is not null
                    && _messages.Values.FirstOrDefault(o => o.Queue == queue && o.Key == message.Key && o.Sequence < message.Sequence && o.Unsettled && o.VisibleBy <= dueSince) is { } older)
                {
                    Violation($"{what}: older m{older.Sequence} of its key is still {older.State} and visible since +{Elapsed(older.VisibleBy)}, before this one was due");
                }

                if (++message.Active > 1)
                {
                    Violation($"{what}: another handler runs it at the same time");
                }

                var roll = message.Outcomes.Next(100);
                var failing = roll < 30;
                if (consumer.Owner is not null)
                {
                    // The crashed consumer's handler: never ends, and its consumer never renews.
                    outcome = "crashed";
                    message.Active--;
                    message.State = ModelState.Crashed;
                    message.LeaseRunsOut = now + ModelLease;
                    message.Attempt++;
                    message.HeldBy = consumer.Name;
                }
                else if (failing && message.Attempt >= ModelMaxAttempts)
                {
                    outcome = "dead-letter";
                    message.State = ModelState.DeadLettered;
                    message.Reason = $"m{message.Sequence} failed {message.Attempt} times";
                    message.DeadLetterAttempt = message.Attempt;
                }
                else if (roll < 15)
                {
                    // The consumer nacks a throwing handler at once: visible again from the nack's write, never later than now.
                    outcome = "throw";
                    message.Attempt++;
                    message.State = ModelState.Pending;
                    message.VisibleAt = message.VisibleBy = now;
                }
                else if (failing)
                {
                    outcome = "retry";
                    delay = RetryDelays[message.Outcomes.Next(RetryDelays.Length)];
                    message.Attempt++;
                    message.State = ModelState.Pending;
                    message.VisibleAt = now + delay;
                    message.VisibleBy = DateTimeOffset.MaxValue;
                }
                else if (roll < 40 && !consumer.Stopping && !_messages.Values.Any(m => m.Queue == queue && m.State == ModelState.Hung))
                {
                    outcome = "hang";
                    message.State = ModelState.Hung;
                    message.HeldBy = consumer.Name;
                    message.HangUntil = now + (ModelLease * 1.5);
                    message.HangGate = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
                }
                else
                {
                    outcome = "succeed";
                    message.State = ModelState.Acked;
                    message.Acks++;
                }

                _seen.AddOrUpdate(outcome, 1, (_, n) => n + 1);
                Note($"  {what}: {outcome}{(delay > TimeSpan.Zero ? $" after {delay.TotalMilliseconds} ms" : string.Empty)}");
            }

            try
            {
                switch (outcome)
                {
                    case "crashed":
                        await Task.Delay(Timeout.Infinite, cancellationToken);
                        return;
                    case "dead-letter":
                        await delivery.DeadLetterAsync(message.Reason!, CancellationToken.None);
                        return;
                    case "throw":
                        throw new InvalidOperationException($"m{message.Sequence} fails, as its seed says");
                    case "retry":
                        // No longer this handler's once the nack asks for it: the release may be claimed again (the clock
                        // advanced past its delay) before the nack call returns here (CI: "another handler runs it at the
                        // same time" on the retry after 200 ms).
                        lock (_gate)
                        {
                            message.Active--;
                        }

                        outcome = "retry-released";
                        await delivery.NackAsync(delay, CancellationToken.None);
                        lock (_gate)
                        {
                            message.VisibleBy = _clock.GetUtcNow() + delay;
                        }

                        return;
                    case "hang":
                        try
                        {
                            await message.HangGate!.Task.WaitAsync(cancellationToken);
                        }
                        catch (OperationCanceledException)
                        {
                            Violation($"m{message.Sequence}'s handler on {consumer.Name} was cancelled at +{Elapsed()}: its lease was not held");
                            throw;
                        }

                        lock (_gate)
                        {
                            message.State = ModelState.Acked;
                            message.Acks++;
                        }

                        return;
                    default:
                        return;
                }
            }
            finally
            {
                if (outcome is not ("crashed" or "retry-released"))
                {
                    lock (_gate)
                    {
                        message.Active--;
                    }
                }
            }
        }

        /// <summary>
        /// A consumer that crashes: on an instance of its own whose clock stops now, so it claims as the others would but never
        /// renews. Only on a queue nobody consumes that holds exactly one message due now (it could take any of them), which
        /// it takes and never settles; the message comes back once its lease ran out, as a new attempt.
        /// </summary>
        private async Task CrashAsync(int op, int queue)
        {
            ModelMessage? target;
            lock (_gate)
            {
                var now = _clock.GetUtcNow();
                if (_consumers.ContainsKey((queue, 0)) || _consumers.ContainsKey((queue, 1)) || _crashes.Count >= 3)
                {
                    return;
                }

                var unsettled = _messages.Values.Where(m => m.Queue == queue && m.Unsettled).ToList();
                target = unsettled.Count == 1 && unsettled[0].State == ModelState.Pending && unsettled[0].VisibleBy <= now ? unsettled[0] : null;
                if (target is null)
                {
                    Note("  nothing to crash on");
                    return;
                }
            }

            var stopped = new FakeTimeProvider(_clock.GetUtcNow());
            var owner = await suite.OpenInstanceAsync(stopped, ModelLease);
            var crashed = new ModelConsumer($"crash{op}", owner);
            crashed.Consumer = await owner.ConsumeAsync(_queues[queue], new ConsumerOptions { MaxConcurrency = 1, Prefetch = 1 }, (d, ct) => HandleAsync(queue, crashed, d, ct));
            lock (_gate)
            {
                _crashes.Add((queue, target, crashed));
            }

            await WaitAsync(() => target.State == ModelState.Crashed, $"the crashing consumer takes m{target.Sequence}");

            // Past its stopped clock at once: what is sent, nacked or leased from now on is never due on that clock, so the
            // crashed consumer (woken by notifications, with room for one more) can take nothing else.
            await StepClockAsync(TimeSpan.FromMilliseconds(1));
        }

        /// <summary>Disposes the crashed consumers whose message came back (or all of them, at the end).</summary>
        private async Task ResolveCrashesAsync(bool all)
        {
            List<ModelConsumer> done;
            lock (_gate)
            {
                done = [.. _crashes.Where(c => all || c.Message.State != ModelState.Crashed || c.Message.HeldBy != c.Consumer.Name).Select(c => c.Consumer)];
                _crashes.RemoveAll(c => done.Contains(c.Consumer));
            }

            foreach (var consumer in done)
            {
                await consumer.Consumer.DisposeAsync().AsTask().WaitAsync(Deadline);
                await consumer.Owner!.DisposeAsync();
            }
        }

        /// <summary>Moves the clock on by <paramref name="by"/> in steps, each once the running handlers' leases were renewed.</summary>
        private async Task AdvanceAsync(TimeSpan by)
        {
            var until = _clock.GetUtcNow() + by;
            while (_clock.GetUtcNow() < until)
            {
                await StepClockAsync(until - _clock.GetUtcNow() < Step ? until - _clock.GetUtcNow() : Step);
            }
        }

        private async Task StepClockAsync(TimeSpan step)
        {
            // A renewal lands on the engine in real time: the clock waits for every live consumer's renewals (of running, buffered
            // and settling messages alike) rather than run their leases out from under them, which counts an attempt.
            for (var queue = 0; queue < _queues.Length; queue++)
            {
                string? late = null;
                await Eventually.UntilAsync(
                    async () =>
                    {
                        // Only what hung before the leases are read must be leased in them: a message claimed and started
                        // while they are read is leased by then, but not in what was read.
                        HashSet<Guid> hungBefore;
                        lock (_gate)
                        {
                            hungBefore = [.. _messages.Values.Where(m => m.Queue == queue && m.State == ModelState.Hung).Select(m => m.Id)];
                        }

                        var leases = await suite.LeasesAsync(_queues[queue]);
                        lock (_gate)
                        {
                            var now = _clock.GetUtcNow();
                            late = leases.Where(l => l.Value > now && l.Value - now <= (ModelLease / 3) + step
                                    && !(_messages.TryGetValue(l.Key, out var m) && m.State == ModelState.Crashed))
                                .Select(l => $"m{Sequence(l.Key)} leased until +{Elapsed(l.Value)}")
                                .FirstOrDefault();
                            var hungLost = _messages.Values.FirstOrDefault(m => hungBefore.Contains(m.Id) && m.State == ModelState.Hung && !leases.ContainsKey(m.Id));
                            Assert.True(hungLost is null, $"m{hungLost?.Sequence} hangs on {hungLost?.HeldBy} but its row is not leased at +{Elapsed()}");
                        }

                        return late is null;
                    },
                    () => $"a renewal lands ({late} at +{Elapsed()})",
                    Deadline);
            }

            _clock.Advance(step);
            lock (_gate)
            {
                var now = _clock.GetUtcNow();
                foreach (var message in _messages.Values.Where(m => m.State == ModelState.Hung && m.HangUntil <= now))
                {
                    message.HangGate!.TrySetResult();
                }
            }

            // Paces the fake clock, as real time would: the consumers' loops see each step before the next (nothing waits on
            // this for a result; the waits above and in SettleAsync are on conditions with deadlines).
            await Task.Delay(2);
        }

        /// <summary>
        /// Waits until nothing the model knows to be claimable now is left in a consumed queue and no handler runs for leases,
        /// stepping the clock meanwhile (another instance's consumers only poll, on the clock).
        /// </summary>
        private async Task SettleAsync()
        {
            // Each poll looks first (this instance's consumers are woken by the commit itself), then steps the clock.
            string? waiting = null;
            await Eventually.UntilAsync(
                async () =>
                {
                    await ResolveCrashesAsync(all: false);
                    lock (_gate)
                    {
                        var now = _clock.GetUtcNow();
                        var consumed = Enumerable.Range(0, _queues.Length).Where(q => _consumers.ContainsKey((q, 0)) || _consumers.ContainsKey((q, 1))).ToHashSet();
                        waiting = _messages.Values.FirstOrDefault(m => m.State == ModelState.Hung || (consumed.Contains(m.Queue) && Claimable(m, now))) is { } m
                            ? $"m{m.Sequence} {m.State} in q{m.Queue}"
                            : null;
                    }

                    if (waiting is null)
                    {
                        return true;
                    }

                    await StepClockAsync(Step);
                    return false;
                },
                () => $"the queues settle ({waiting}; pending: {Pending()})",
                Deadline);
            AssertNoViolations();
        }

        /// <summary>Surely claimable now: due, not held, and no older message of its key possibly visible.</summary>
        private bool Claimable(ModelMessage m, DateTimeOffset now) =>
            (m.State == ModelState.Pending || (m.State == ModelState.Crashed && m.LeaseRunsOut <= now))
            && m.VisibleBy <= now
            && (m.Key is null || !_messages.Values.Any(o => o.Queue == m.Queue && o.Key == m.Key && o.Sequence < m.Sequence && o.Unsettled && o.VisibleAt <= now));

        /// <summary>The rows each queue holds match the model's unsettled messages, once the settlements under way have landed.</summary>
        private async Task CheckDepthAsync()
        {
            for (var queue = 0; queue < _queues.Length; queue++)
            {
                long expected = 0, rows = 0;
                await Eventually.UntilAsync(
                    async () =>
                    {
                        lock (_gate)
                        {
                            expected = _messages.Values.Count(m => m.Queue == queue && m.Unsettled);
                        }

                        rows = await suite.CountQueuedAsync(_queues[queue]);
                        return rows == expected;
                    },
                    () => $"q{queue} holds as many rows as the model has unsettled messages ({rows} against {expected}; pending: {Pending()})",
                    Deadline);
            }
        }

        private Task WaitAsync(Func<bool> condition, string what) =>
            Eventually.UntilAsync(
                () =>
                {
                    lock (_gate)
                    {
                        return ValueTask.FromResult(condition());
                    }
                },
                () => $"{what} (pending: {Pending()})",
                Deadline);

        private void AssertNoViolations() =>
            Assert.True(_violations.IsEmpty, "the queue broke the model:" + Environment.NewLine + string.Join(Environment.NewLine, _violations));

        private string Pending()
        {
            lock (_gate)
            {
                return string.Join(", ", _messages.Values.Where(m => m.Unsettled).Select(m =>
                    $"m{m.Sequence} q{m.Queue} {m.State} key {m.Key ?? "-"} attempt {m.Attempt} visible +{Elapsed(m.VisibleAt)}"));
            }
        }

        private void Doing(int op, string what)
        {
            _doing = $"operation {op}: {what}";
            Note(string.Create(CultureInfo.InvariantCulture, $"{op} +{Elapsed()}: {what}"));
        }

        private void Violation(string what)
        {
            _violations.Enqueue(what);
            Note("  VIOLATION " + what);
        }

        private void Note(string line) => _log.Enqueue(line);

        private string Elapsed() => Elapsed(_clock.GetUtcNow());

        private static string Elapsed(DateTimeOffset time) =>
            time == DateTimeOffset.MaxValue
                ? "(a nack on its way)"
                : (time - new DateTimeOffset(2030, 1, 1, 0, 0, 0, TimeSpan.Zero)).TotalSeconds.ToString("F1", CultureInfo.InvariantCulture) + "s";
    }
}
