using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;
using Confluent.Kafka;
using Herald.Conformance;
using Herald.Kafka.Transport;
using Herald.Transport;
using Microsoft.Extensions.Logging;
using Xunit.Abstractions;

namespace Herald.Kafka.Tests;

/// <summary>
/// A seeded model of one queue's consumer group while members come and go: keyed sends, members joining (each on its own
/// transport), leaving gracefully (stop) or abruptly (dispose, which cancels running handlers), handlers held on signals
/// while the group rebalances (released when their partition is revoked or by the driver), and handlers that fail once
/// (a throw: a copy at the end of the queue; a delayed nack: through the retry topic) or for good (dead-lettered).
/// Checked against docs/kafka.md: every message handled; never by two members at once; per key the first handlings in
/// send order; a message handled twice only where its member left the partition's next owner to read it again (an abrupt
/// stop on a partition it held, a revocation whose wait ran out: log 6033, a stop leaving records: log 6034); only the
/// poison messages in the dead-letter topic; everything committed at the end. Every wait has a deadline: a member whose
/// stop or dispose does not return fails the run with its log instead of holding the test run.
/// </summary>
public sealed partial class ConsumerGroupModelTests : KafkaTestBase
{
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(20);
    private readonly ITestOutputHelper _output;

    public ConsumerGroupModelTests(ITestOutputHelper output)
    {
        _output = output;
    }

    /// <summary>Fixed seeds, so a failure names one that reproduces it; <c>HERALD_MODEL_SEEDS=N</c> runs seeds 1 to N (a soak).</summary>
    public static TheoryData<int> Seeds => new(Enumerable.Range(1, int.TryParse(Environment.GetEnvironmentVariable("HERALD_MODEL_SEEDS"), CultureInfo.InvariantCulture, out var count) && count > 0 ? count : 4));

    [Theory]
    [MemberData(nameof(Seeds))]
    public async Task Model_MembersComingAndGoing_WithHeldAndFailingHandlers_MatchTheReferenceModel(int seed)
    {
        var run = new ModelRun(this, seed);
        await run.RunAsync();
    }

    private enum Fate
    {
        Succeeds,
        ThrowsOnce,
        NackedOnceWithDelay,
        Poison,
    }

    private sealed class Spec(int seq, string key, Fate fate, bool slow)
    {
        public int Seq { get; } = seq;
        public Guid Id { get; } = Guid.CreateVersion7();
        public string Key { get; } = key;
        public Fate Fate { get; } = fate;
        public bool Slow { get; } = slow;
        public int Failed;
        public int Held;
        public TaskCompletionSource Gate { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
        public int? Partition { get; set; }

        public override string ToString() => $"#{Seq} {Key} {Fate}{(Slow ? " slow" : string.Empty)}{(Partition is { } p ? $" p{p}" : string.Empty)}";
    }

    /// <summary>One run of a handler: who ran it, on which partition, when it started and ended (a global step count), and how it ended.</summary>
    private sealed class Run(Spec spec, int member, int partition, int start)
    {
        public Spec Spec { get; } = spec;
        public int Member { get; } = member;
        public int Partition { get; } = partition;
        public int Start { get; } = start;
        public int End { get; set; } = -1;
        public string Outcome { get; set; } = "running";

        public override string ToString() => $"[{Start}-{End}] member {Member} p{Partition} {Spec} {Outcome}";
    }

    private sealed class Member(int id, KafkaTransport transport)
    {
        public int Id { get; } = id;
        public KafkaTransport Transport { get; } = transport;
        public KafkaConsumer? Consumer { get; set; }
    }

    /// <summary>
    /// A transport's log, as the model reads it: which member uses the transport now, and, when its consumer says it leaves
    /// records of a partition of the queue to their next owner (6033, 6034), which partition.
    /// </summary>
    private sealed partial class TransportLog(string queue, Action<int, int, string> leaves) : ILoggerFactory, ILogger
    {
        public int Member { get; set; }

        public ILogger CreateLogger(string categoryName) => this;

        public void AddProvider(ILoggerProvider provider)
        {
        }

        public void Dispose()
        {
        }

        public IDisposable? BeginScope<TState>(TState state)
            where TState : notnull => null;

        public bool IsEnabled(LogLevel logLevel) => true;

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            if (eventId.Id is not (6033 or 6034) || state is not IReadOnlyList<KeyValuePair<string, object?>> values)
            {
                return;
            }

            // "topic [[2]]": the queue's own partitions only.
            var partition = values.FirstOrDefault(v => v.Key == "Partition").Value as string ?? string.Empty;
            if (partition.StartsWith(queue + " ", StringComparison.Ordinal) && PartitionNumber().Match(partition) is { Success: true } match)
            {
                leaves(Member, int.Parse(match.Groups[1].Value, CultureInfo.InvariantCulture), $"{eventId.Id}: {formatter(state, exception)}");
            }
        }

        [GeneratedRegex(@"\[(\d+)\]\]?$")]
        private static partial Regex PartitionNumber();
    }

    private sealed class ModelRun(ConsumerGroupModelTests test, int seed)
    {
        private static readonly string[] Keys = ["a", "b", "c", "d", "e"];
        private readonly Random _random = new(seed);
        private readonly string _queue = Name("group-model");
        private readonly Lock _gate = new();
        private readonly List<Spec> _specs = [];
        private readonly Dictionary<Guid, Spec> _byId = [];
        private readonly List<Run> _runs = [];
        private readonly Dictionary<Guid, Run> _running = [];
        private readonly List<string> _log = [];
        private readonly List<string> _failures = [];
        private readonly List<Member> _members = [];
        private readonly List<KafkaTransport> _idle = [];

        // Where a member left a partition's records to their next owner (its runs there before the step At may be repeated):
        // partitions it held when it was stopped abruptly (At: once its dispose returned), and partitions its consumer said
        // so of (6033, 6034; At: when it said it).
        private readonly List<(int Member, HashSet<int> Partitions, int At, string Why)> _exposures = [];
        private readonly Dictionary<KafkaTransport, TransportLog> _transportLogs = [];
        private int _clock;
        private int _nextMember;
        private KafkaTransport _sender = null!;

        public async Task RunAsync()
        {
            _sender = await CreateTransportAsync();
            try
            {
                await JoinAsync();
                var steps = 16;
                for (var step = 0; step < steps; step++)
                {
                    var active = _members.Count(m => m.Consumer is not null);
                    switch (_random.Next(10))
                    {
                        case < 4:
                            await SendAsync(1 + _random.Next(5));
                            break;
                        case < 6 when active < 3:
                            await JoinAsync();
                            break;
                        case 6 when active > 0:
                            await LeaveGracefullyAsync(PickActive());
                            break;
                        case 7 when active > 0:
                            await LeaveAbruptlyAsync(PickActive());
                            break;
                        case 8 or 9:
                            ReleaseAll("driver");
                            break;
                        default:
                            await SendAsync(1 + _random.Next(3));
                            break;
                    }
                }

                if (_members.All(m => m.Consumer is null))
                {
                    await JoinAsync();
                }

                ReleaseAll("end");
                await WaitForEveryMessageAsync();
                await Eventually.UntilAsync(() => Uncommitted(_queue, _queue) == 0, "every offset of the queue committed", Deadline);
                Check();
            }
            catch (Exception e) when (e is TimeoutException or InvalidOperationException)
            {
                _failures.Add(e.Message);
            }
            finally
            {
                ReleaseAll("dispose");
                foreach (var member in _members.Where(m => m.Consumer is not null))
                {
                    await WithinDeadlineAsync(member.Consumer!.DisposeAsync().AsTask(), $"member {member.Id}'s dispose at the end");
                }
            }

            if (_failures.Count > 0)
            {
                Assert.Fail(Report());
            }

            test._output.WriteLine($"seed {seed}: {_specs.Count} messages ({string.Join(", ", _specs.GroupBy(s => s.Fate).Select(g => $"{g.Count()} {g.Key}"))}), "
                + $"{_specs.Count(s => s.Slow)} slow, {_nextMember} members, {_exposures.Count} partition hand-over(s) that may repeat records, {_runs.Count} handler runs");
        }

        /// <summary>A transport whose log tells the model what its consumers leave to the partitions' next owners.</summary>
        private async Task<KafkaTransport> CreateTransportAsync()
        {
            var log = new TransportLog(_queue, Leaves);
            test.LoggerFactory = log;
            var transport = await test.CreateTransportAsync();
            _transportLogs[transport] = log;
            return transport;
        }

        private void Leaves(int member, int partition, string message)
        {
            lock (_gate)
            {
                _exposures.Add((member, [partition], ++_clock, message));
            }

            Log($"member {member} leaves p{partition} to its next owner ({message})");
        }

        /// <summary>Waits for <paramref name="task"/> up to the deadline; past it the run fails naming <paramref name="what"/>, and goes on.</summary>
        private async Task<bool> WithinDeadlineAsync(Task task, string what)
        {
            try
            {
                await task.WaitAsync(Deadline);
                return true;
            }
            catch (TimeoutException)
            {
                lock (_gate)
                {
                    _failures.Add($"{what} did not return within {Deadline.TotalSeconds:0} s");
                }

                return false;
            }
        }

        private Member PickActive()
        {
            var active = _members.Where(m => m.Consumer is not null).ToList();
            return active[_random.Next(active.Count)];
        }

        private async Task SendAsync(int count)
        {
            for (var i = 0; i < count; i++)
            {
                var fate = _random.Next(12) switch
                {
                    < 7 => Fate.Succeeds,
                    < 9 => Fate.ThrowsOnce,
                    < 11 => Fate.NackedOnceWithDelay,
                    _ => Fate.Poison,
                };
                var spec = new Spec(_specs.Count, Keys[_random.Next(Keys.Length)], fate, _random.Next(4) == 0);
                lock (_gate)
                {
                    _specs.Add(spec);
                    _byId[spec.Id] = spec;
                }

                await _sender.SendAsync(_queue, NewEnvelope(spec.Key, $"{{\"seq\":{spec.Seq}}}") with { MessageId = spec.Id });
                Log($"sent {spec}");
            }
        }

        private async Task JoinAsync()
        {
            var id = ++_nextMember;
            KafkaTransport transport;
            if (_idle.Count > 0)
            {
                transport = _idle[^1];
                _idle.RemoveAt(_idle.Count - 1);
            }
            else
            {
                transport = await CreateTransportAsync();
            }

            _transportLogs[transport].Member = id;
            var member = new Member(id, transport);
            _members.Add(member);
            Log($"member {id} joining");
            var consumer = (KafkaConsumer)await transport.ConsumeAsync(_queue, new ConsumerOptions { MaxConcurrency = 3, Prefetch = 8 }, (d, ct) => HandleAsync(member, d, ct));
            member.Consumer = consumer;
            consumer.Revoking += partitions => OnRevoking(member, partitions);
            Log($"member {id} joined, holds [{string.Join(",", consumer.Assignment.Select(p => p.Partition.Value))}]");
        }

        private async Task LeaveGracefullyAsync(Member member)
        {
            var consumer = member.Consumer!;
            Log($"member {member.Id} stopping gracefully, holds [{string.Join(",", consumer.Assignment.Select(p => p.Partition.Value))}]");
            var stopping = consumer.StopAsync();

            // Its held handlers finish while it stops: what they settle is committed before it leaves.
            Release(s => RunsOf(member).Any(r => r.Spec == s && r.Outcome == "running"), $"member {member.Id} stopping");
            await stopping.WaitAsync(Deadline);
            if (!await WithinDeadlineAsync(consumer.DisposeAsync().AsTask(), $"member {member.Id}'s dispose after its stop"))
            {
                throw new TimeoutException($"member {member.Id}'s dispose after its stop did not return");
            }

            member.Consumer = null;
            _idle.Add(member.Transport);
            Log($"member {member.Id} stopped");
        }

        private async Task LeaveAbruptlyAsync(Member member)
        {
            var consumer = member.Consumer!;
            var held = consumer.Assignment.Select(p => p.Partition.Value).ToHashSet();
            Log($"member {member.Id} disposed abruptly, holds [{string.Join(",", held)}]");

            // Disposed without a stop: its running handlers are cancelled, and what they ran may be handled again. A handler
            // may still start while the dispose begins, so what the member ran up to the dispose's return is exposed.
            await consumer.DisposeAsync().AsTask().WaitAsync(Deadline);
            lock (_gate)
            {
                _exposures.Add((member.Id, held, ++_clock, "abrupt stop"));
            }

            member.Consumer = null;
            _idle.Add(member.Transport);
            Log($"member {member.Id} gone");
        }

        private List<Run> RunsOf(Member member)
        {
            lock (_gate)
            {
                return _runs.Where(r => r.Member == member.Id).ToList();
            }
        }

        private void OnRevoking(Member member, IReadOnlyList<TopicPartition> partitions)
        {
            var revoked = partitions.Select(p => p.Partition.Value).ToHashSet();
            Log($"member {member.Id} revoking [{string.Join(",", revoked)}]");

            // A held handler of a revoked partition ends during the revocation's wait for it (well within RevocationTimeout).
            Release(s => RunsOf(member).Any(r => r.Spec == s && r.Outcome == "running" && revoked.Contains(r.Partition)), $"member {member.Id} revoking");
        }

        private void ReleaseAll(string why) => Release(_ => true, why);

        private void Release(Func<Spec, bool> which, string why)
        {
            List<Spec> released;
            lock (_gate)
            {
                released = _specs.Where(s => s.Slow && !s.Gate.Task.IsCompleted && which(s)).ToList();
            }

            foreach (var spec in released)
            {
                spec.Gate.TrySetResult();
            }

            if (released.Count > 0)
            {
                Log($"released ({why}): {string.Join(", ", released.Select(s => "#" + s.Seq))}");
            }
        }

        private async ValueTask HandleAsync(Member member, Delivery delivery, CancellationToken ct)
        {
            var partition = ((KafkaDelivery)delivery).Entry.Partition.Partition.Partition.Value;
            Run run;
            lock (_gate)
            {
                if (!_byId.TryGetValue(delivery.Envelope.MessageId, out var spec))
                {
                    _failures.Add($"member {member.Id} handled a message the run never sent: {delivery.Envelope.MessageId}");
                    return;
                }

                spec.Partition ??= partition;
                run = new Run(spec, member.Id, partition, ++_clock);
                if (_running.TryGetValue(spec.Id, out var other))
                {
                    _failures.Add($"{spec} handled by member {member.Id} while member {other.Member} still ran it (since step {other.Start})");
                }

                _running[spec.Id] = run;
                _runs.Add(run);
            }

            var spec2 = run.Spec;
            try
            {
                if (spec2.Slow && Interlocked.Exchange(ref spec2.Held, 1) == 0)
                {
                    await spec2.Gate.Task.WaitAsync(ct);
                }

                switch (spec2.Fate)
                {
                    case Fate.ThrowsOnce when Interlocked.Exchange(ref spec2.Failed, 1) == 0:
                        End(run, "threw");
                        throw new InvalidOperationException($"model failure of #{spec2.Seq}");
                    case Fate.NackedOnceWithDelay when Interlocked.Exchange(ref spec2.Failed, 1) == 0:
                        End(run, "nacked");
                        await delivery.NackAsync(TimeSpan.FromMilliseconds(200), ct);
                        return;
                    case Fate.Poison:
                        End(run, "dead-lettered");
                        await delivery.DeadLetterAsync($"model poison #{spec2.Seq}", ct);
                        return;
                    default:
                        End(run, "ok");
                        return;
                }
            }
            catch (OperationCanceledException) when (ct.IsCancellationRequested)
            {
                End(run, "cancelled");
                throw;
            }
        }

        private void End(Run run, string outcome)
        {
            lock (_gate)
            {
                if (run.End >= 0)
                {
                    return;
                }

                run.End = ++_clock;
                run.Outcome = outcome;
                _running.Remove(run.Spec.Id);
            }
        }

        private async Task WaitForEveryMessageAsync()
        {
            bool Done(Spec s)
            {
                lock (_gate)
                {
                    return _runs.Any(r => r.Spec == s && r.Outcome is "ok" or "dead-lettered");
                }
            }

            try
            {
                await Eventually.UntilAsync(() => _specs.All(Done), "every message handled or dead-lettered", Deadline);
            }
            catch (TimeoutException e)
            {
                _failures.Add($"{e.Message} Not done: {string.Join(", ", _specs.Where(s => !Done(s)))}");
                throw;
            }
        }

        private void Check()
        {
            List<Run> runs;
            lock (_gate)
            {
                runs = [.. _runs];
            }

            foreach (var spec in _specs)
            {
                var own = runs.Where(r => r.Spec == spec).ToList();
                var done = own.Where(r => r.Outcome is "ok" or "dead-lettered").ToList();

                // Handled again only where its member left the partition's records to their next owner (docs/kafka.md,
                // Rebalance and Stop): an abrupt stop, a revocation whose wait ran out, a stop leaving records unsettled.
                var exposed = own.Any(r => _exposures.Any(c => c.Member == r.Member && c.Partitions.Contains(r.Partition) && r.Start < c.At));
                if (done.Count > 1 && !exposed)
                {
                    _failures.Add($"{spec}: handled {done.Count} times, and its member never left its partition to the next owner before it ran: {string.Join("; ", own)}");
                }

                var failures = own.Count(r => r.Outcome is "threw" or "nacked");
                if (failures > 1)
                {
                    _failures.Add($"{spec}: failed {failures} times, its handler fails once");
                }
            }

            // Per key, the first handlings in send order (a retried message's copy comes later, which is no first handling).
            foreach (var key in _specs.GroupBy(s => s.Key))
            {
                var firsts = key.Select(s => (Spec: s, First: runs.Where(r => r.Spec == s).Min(r => r.Start))).OrderBy(x => x.First).Select(x => x.Spec.Seq).ToList();
                var sent = key.Select(s => s.Seq).ToList();
                if (!firsts.SequenceEqual(sent))
                {
                    _failures.Add($"key {key.Key}: first handled in the order {string.Join(",", firsts)}, sent in the order {string.Join(",", sent)}");
                }
            }

            // The dead-letter topic holds the poison messages (at least once each) and nothing else.
            var dead = DeadLetterIds();
            var poison = _specs.Where(s => s.Fate == Fate.Poison).Select(s => s.Id).ToHashSet();
            var strangers = dead.Where(id => !poison.Contains(id)).Select(id => _byId.TryGetValue(id, out var s) ? s.ToString() : id.ToString()).ToList();
            if (strangers.Count > 0)
            {
                _failures.Add($"dead-lettered but not poison: {string.Join(", ", strangers)}");
            }

            var missing = _specs.Where(s => poison.Contains(s.Id) && !dead.Contains(s.Id)).ToList();
            if (missing.Count > 0)
            {
                _failures.Add($"poison not in the dead-letter topic: {string.Join(", ", missing)}");
            }
        }

        private List<Guid> DeadLetterIds()
        {
            var topic = _queue + ".dead-letter";
            var total = EndOffsets(topic);
            var ids = new List<Guid>();
            if (total == 0)
            {
                return ids;
            }

            using var consumer = new ConsumerBuilder<byte[]?, byte[]>(new ConsumerConfig
            {
                BootstrapServers = MockCluster.BootstrapServers,
                GroupId = "herald-model-probe-" + Guid.NewGuid().ToString("N"),
                AutoOffsetReset = AutoOffsetReset.Earliest,
                EnableAutoCommit = false,
            }).Build();
            consumer.Subscribe(topic);
            var deadline = DateTime.UtcNow + Deadline;
            while (ids.Count < total && DateTime.UtcNow < deadline)
            {
                if (consumer.Consume(TimeSpan.FromMilliseconds(200)) is { Message: { } message })
                {
                    var id = message.Headers.TryGetLastBytes("ce_id", out var bytes) ? Guid.Parse(Encoding.UTF8.GetString(bytes)) : Guid.Empty;
                    ids.Add(id);
                }
            }

            // Closed off the test's thread, within the deadline: a close that never returns fails the run, not the test run.
            if (!Task.Run(consumer.Close).Wait(Deadline))
            {
                _failures.Add($"the dead-letter probe's close did not return within {Deadline.TotalSeconds:0} s");
            }

            return ids;
        }

        private void Log(string line)
        {
            lock (_gate)
            {
                _log.Add($"{DateTime.UtcNow.ToString("HH:mm:ss.fff", CultureInfo.InvariantCulture)} [{_clock}] {line}");
            }
        }

        private string Report()
        {
            var text = new StringBuilder().AppendLine(CultureInfo.InvariantCulture, $"seed {seed}, queue {_queue}:");
            foreach (var failure in _failures)
            {
                text.AppendLine(failure);
            }

            text.AppendLine("operations:");
            lock (_gate)
            {
                foreach (var line in _log)
                {
                    text.AppendLine(line);
                }

                text.AppendLine("handler runs:");
                foreach (var run in _runs)
                {
                    text.AppendLine(run.ToString());
                }
            }

            return text.ToString();
        }
    }
}
