using System.Collections.Concurrent;
using System.Globalization;
using System.Text;
using Herald.Conformance;
using Herald.EventSourcing;
using Herald.Hosting;
using Herald.Messages;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Npgsql;
using Xunit.Abstractions;

namespace Herald.Streams.Tests;

/// <summary>
/// A seeded model of one stream shared by several members (processes: each its own host and connections on one PostgreSQL
/// schema) over four partitions: filter, map, group-by, a suppressed tumbling sum with a late output, a suppressed hopping
/// count and an inner stream-stream join, fed by orders and payments appended with out-of-order event times (some late
/// within the out-of-orderness and grace, some beyond). Between batches of appends members start, stop, crash (their
/// commits fail) and have every session killed (their leases are lost while they still run). Once one member has caught up
/// alone, what the sinks appended (exactly once: event store sinks in the commit's unit of work, per docs/streams.md) must
/// equal a brute-force computation of the docs' rules over the same input: each closed window once with its final value,
/// each late record of the tumbling window once, each joined pair once. Members still trusting their leases never hold
/// the same partition.
/// </summary>
public sealed class MemberModelTests(ITestOutputHelper output)
{
    private const int Partitions = 4;
    private const int OrderCount = 160;
    private static readonly long Second = TimeSpan.TicksPerSecond;
    private static readonly DateTimeOffset T0 = new(2026, 1, 1, 0, 0, 0, TimeSpan.Zero);
    private static readonly string[] Products = ["p0", "p1", "p2", "p3", "p4"];

    public static TheoryData<int> Seeds => [1, 2, 3];

    [Theory]
    [MemberData(nameof(Seeds))]
    public async Task SeveralMembersSharingPartitions_ThroughStopsCrashesAndLostLeases_EmitWhatTheModelSays(int seed)
    {
        var schema = TestPostgres.NewSchema();
        var run = new ModelRun(seed, schema);
        try
        {
            await run.RunAsync();
            output.WriteLine(run.Log.ToString());
        }
        catch (Exception ex)
        {
            output.WriteLine(run.Log.ToString());
            throw new Xunit.Sdk.XunitException($"seed {seed} ({run.Settings}) failed: {ex.Message}\n--- operations ---\n{run.Log}", ex);
        }
        finally
        {
            await run.DisposeAsync();
            await TestPostgres.DropAsync(schema);
        }
    }

    private sealed record Settings(long OutOfOrder, long Grace, long Within, long JoinGrace)
    {
        public override string ToString() =>
            $"out-of-order {OutOfOrder / (double)Second} s, grace {Grace / (double)Second} s, join within {Within / (double)Second} s, join grace {JoinGrace / (double)Second} s";
    }

    private sealed class ModelRun(int seed, string schema) : IAsyncDisposable
    {
        private readonly Random _rng = new(seed);
        // Changed only by the operations, which run one at a time; the ownership sampler runs beside them and takes its copy
        // under this lock (a List copied while another thread adds to it can hand out a null slot).
        private readonly List<Member> _members = [];
        private readonly Lock _membersGate = new();
        private readonly ConcurrentQueue<string> _overlaps = new();
        private int _nextId;

        public StringBuilder Log { get; } = new();

        public Settings Settings { get; private set; } = null!;

        public async Task RunAsync()
        {
            // Event times are whole seconds + 0.5 s, the out-of-orderness whole seconds, the graces whole + 0.25 s and the join
            // window whole + 0.5 s: no time ever ties with a window's close or a join's bound, so the model needs no tie rules.
            Settings = new Settings(
                OutOfOrder: _rng.Next(0, 11) * Second,
                Grace: (_rng.Next(0, 16) * Second) + (Second / 4),
                Within: (_rng.Next(10, 40) * Second) + (Second / 2),
                JoinGrace: (_rng.Next(0, 16) * Second) + (Second / 4));
            var inputs = Generate();
            Write($"seed {seed}: {Settings}; {inputs.Count} inputs");

            using var sampler = new CancellationTokenSource();
            var sampling = SampleOwnershipAsync(sampler.Token);
            try
            {
                await StartMemberAsync();
                var appender = await StartHostAsync("appender");
                try
                {
                    var events = appender.Services.GetRequiredService<IEventStore>();
                    var envelopes = appender.Services.GetRequiredService<EnvelopeFactory>();
                    var i = 0;

                    // The last input's own position, not the store's head: an older transaction elsewhere on the server (another
                    // test's) holds the readable head back, and GetLastPositionAsync returns what is readable after 10 s.
                    var head = 0L;
                    while (i < inputs.Count)
                    {
                        var batch = _rng.Next(5, 20);
                        for (var end = Math.Min(inputs.Count, i + batch); i < end; i++)
                        {
                            var input = inputs[i];
                            var appended = await events.AppendAsync(input.Stream, ExpectedVersion.Any, [envelopes.Create(input.Message)]);
                            head = Math.Max(head, appended.LastPosition);
                        }

                        await OperateAsync();
                    }

                    Write($"appended everything; the last input is at position {head}");

                    // Everyone goes; one member catches up alone (so every partition's last work is committed).
                    foreach (var member in _members.ToList())
                    {
                        await StopMemberAsync(member);
                    }

                    var last = await StartMemberAsync();
                    await Eventually.UntilAsync(() => last.Processor.OwnedPartitions.Count == Partitions, "the last member holds every partition", TimeSpan.FromSeconds(30));
                    await last.Processor.WaitForPositionAsync(head).WaitAsync(TimeSpan.FromSeconds(90));
                    await StopMemberAsync(last);

                    await sampler.CancelAsync();
                    await sampling;
                    Assert.True(_overlaps.IsEmpty, "members trusting their leases held the same partition: " + string.Join("; ", _overlaps));
                    await CheckAsync(appender, inputs);
                }
                finally
                {
                    await appender.StopAsync();
                    appender.Dispose();
                }
            }
            finally
            {
                await sampler.CancelAsync();
                await sampling;
            }
        }

        private async Task OperateAsync()
        {
            var live = _members.Where(m => !m.Killed && !m.Crashing).ToList();
            var roll = _rng.Next(100);
            if (roll < 30 && _members.Count < 3)
            {
                await StartMemberAsync();
            }
            else if (roll < 45 && live.Count > 1)
            {
                await StopMemberAsync(live[_rng.Next(live.Count)]);
            }
            else if (roll < 60 && live.Count > 0)
            {
                var member = live[_rng.Next(live.Count)];
                member.Crashing = true; // its next commit with output fails, as a crash between commits leaves it
                Write($"crash m{member.Id} (its commits fail from now on; owned {Owned(member)})");
            }
            else if (roll < 72 && live.Count > 0)
            {
                var member = live[_rng.Next(live.Count)];
                member.Killed = true;
                var killed = await KillSessionsAsync(member);
                Write($"kill the {killed} lock sessions of m{member.Id} (its leases are lost, it notices within seconds; owned {Owned(member)})");
            }
            else
            {
                Write("no change");
            }

            // Members whose run failed (a crash, a lost lease) are gone: the hosted service would restart them, a new one does here.
            foreach (var member in _members.Where(m => m.Processor.Completion.IsCompleted).ToList())
            {
                Write($"m{member.Id} ended: {member.Processor.Completion.Exception?.InnerException?.GetType().Name ?? "completed"}");
                await StopMemberAsync(member);
            }

            if (_members.Count == 0 || _members.All(m => m.Killed || m.Crashing))
            {
                await StartMemberAsync();
            }
        }

        private async Task<Member> StartMemberAsync()
        {
            var id = ++_nextId;
            var host = await StartHostAsync("m" + id);
            var member = new Member(id, host);
            member.Processor = new StreamProcessor("shared", Topology(member), host.Services, new StreamProcessorOptions
            {
                Partitions = Partitions,
                CommitEvery = 7,
                PartitionBalanceInterval = TimeSpan.FromMilliseconds(200),
                AllowedOutOfOrderness = TimeSpan.FromTicks(Settings.OutOfOrder),
            });
            lock (_membersGate)
            {
                _members.Add(member);
            }

            await member.Processor.StartAsync().WaitAsync(TimeSpan.FromSeconds(30));
            Write($"start m{id} (owns {Owned(member)})");
            return member;
        }

        private async Task StopMemberAsync(Member member)
        {
            lock (_membersGate)
            {
                _members.Remove(member);
            }

            var owned = Owned(member);
            try
            {
                await member.Processor.StopAsync().WaitAsync(TimeSpan.FromSeconds(30));
            }
            catch (Exception ex) when (ex is not TimeoutException)
            {
                // A crashed or fenced member's stop reports its failure; what matters is what it committed.
            }

            await member.Host.StopAsync().WaitAsync(TimeSpan.FromSeconds(30));
            member.Host.Dispose();
            Write($"stop m{member.Id} (owned {owned})");
        }

        private async Task<int> KillSessionsAsync(Member member)
        {
            await using var connection = new NpgsqlConnection(TestPostgres.ConnectionString);
            await connection.OpenAsync();
            await using var command = new NpgsqlCommand(
                "SELECT count(pg_terminate_backend(a.pid)) FROM pg_stat_activity a WHERE a.application_name = $1 AND a.pid <> pg_backend_pid() " +
                "AND EXISTS (SELECT 1 FROM pg_locks l WHERE l.pid = a.pid AND l.locktype = 'advisory' AND l.granted)", connection);
            command.Parameters.Add(new NpgsqlParameter<string> { TypedValue = ApplicationName("m" + member.Id) });
            return (int)(long)(await command.ExecuteScalarAsync())!;
        }

        private async Task SampleOwnershipAsync(CancellationToken cancellationToken)
        {
            // A sample every 20 ms until the run ends: the periodic look is the check, not a wait for something.
            using var timer = new PeriodicTimer(TimeSpan.FromMilliseconds(20));
            do
            {
                var holders = new Dictionary<int, int>();
                Member[] members;
                lock (_membersGate)
                {
                    members = [.. _members];
                }

                foreach (var member in members)
                {
                    if (member.Killed || member.Processor is null)
                    {
                        continue; // it may not have noticed yet; the fence keeps its commits out
                    }

                    foreach (var partition in member.Processor.OwnedPartitions)
                    {
                        if (holders.TryGetValue(partition, out var other) && other != member.Id)
                        {
                            _overlaps.Enqueue($"partition {partition}: m{other} and m{member.Id}");
                        }

                        holders[partition] = member.Id;
                    }
                }
            }
            while (await NextSampleAsync(timer, cancellationToken));
        }

        private static async Task<bool> NextSampleAsync(PeriodicTimer timer, CancellationToken cancellationToken)
        {
            try
            {
                return await timer.WaitForNextTickAsync(cancellationToken);
            }
            catch (OperationCanceledException)
            {
                return false;
            }
        }

        private StreamTopology Topology(Member member)
        {
            var builder = new StreamBuilder();
            var orders = builder.Stream<Order>(o => o.PlacedAt)
                .Filter(o => o.Amount != 5)
                .Map(o => o with { Amount = o.Amount * 10 });
            var byProduct = orders.GroupBy(o => o.ProductId);
            byProduct.WindowedBy(TumblingWindows.Of(TimeSpan.FromMinutes(1)).WithGrace(TimeSpan.FromTicks(Settings.Grace)))
                .WithLateOutput(late => late.Map(o => new ModelLate(o.OrderId)).To(StreamSinks.EventStore<string, ModelLate>((k, _) => "mlate-" + k)))
                .SuppressUntilWindowCloses()
                .Aggregate(() => 0m, (_, o, sum) => sum + o.Amount, "sums").ToStream()
                .Map((w, sum) => new ModelWindow("sum", w.Key, w.Window.Start, sum))
                .To(StreamSinks.EventStore<Windowed<string>, ModelWindow>((w, _) => "msum-" + w.Key));
            byProduct.WindowedBy(HoppingWindows.Of(TimeSpan.FromSeconds(90), TimeSpan.FromSeconds(30)).WithGrace(TimeSpan.FromTicks(Settings.Grace)))
                .SuppressUntilWindowCloses()
                .Count("counts").ToStream()
                .Map((w, count) => new ModelWindow("count", w.Key, w.Window.Start, count))
                .To(StreamSinks.EventStore<Windowed<string>, ModelWindow>((w, _) => "mcount-" + w.Key));
            var payments = builder.Stream<Payment>(p => p.PaidAt).SelectKey(p => p.OrderId);
            orders.SelectKey(o => o.OrderId)
                .Join(payments, (o, p) => new ModelPair(o.OrderId, o.Amount, p.Amount), JoinWindows.Of(TimeSpan.FromTicks(Settings.Within)).WithGrace(TimeSpan.FromTicks(Settings.JoinGrace)))
                .To(StreamSinks.EventStore<string, ModelPair>((k, _) => "mpair-" + k));

            // Each record of the orders reaches a partition here, so a crashing member's commits with orders fail.
            orders.To(StreamSinks.Callback<string, Order>(_ =>
            {
                if (member.Crashing)
                {
                    throw new InvalidOperationException($"m{member.Id} crashes before this commit");
                }
            }));
            return builder.Build();
        }

        private List<(string Stream, object Message)> Generate()
        {
            var list = new List<(string Stream, object Message, double Order)>();
            var payment = 0;
            for (var i = 0; i < OrderCount; i++)
            {
                // Mostly a few seconds out of order; one in ten far back (late beyond grace for most settings).
                var jitter = _rng.Next(10) == 0 ? -_rng.Next(40, 180) : _rng.Next(-12, 3);
                var placed = T0.AddSeconds((i * 4) + jitter + 0.5);
                var order = new Order("o" + i, Products[_rng.Next(Products.Length)], _rng.Next(1, 10), placed);
                list.Add(("order-" + i, order, i));
                for (var n = _rng.Next(10) < 7 ? _rng.Next(1, 3) : 0; n > 0; n--)
                {
                    var paid = placed.AddSeconds(_rng.Next(-10, 61));
                    list.Add(("payment-" + payment, new Payment(order.OrderId, ++payment, paid), i + (_rng.NextDouble() * 8)));
                }
            }

            return [.. list.OrderBy(x => x.Order).Select(x => (x.Stream, x.Message))];
        }

        private async Task CheckAsync(IHost host, List<(string Stream, object Message)> inputs)
        {
            // The model: docs/streams.md's rules applied to the log in order.
            var s = Settings;
            var maxTime = long.MinValue;
            var sums = new Dictionary<(string, long), decimal>();
            var counts = new Dictionary<(string, long), long>();
            var late = new List<string>();
            var lefts = new List<(string OrderId, decimal Amount, long Time)>();
            var rights = new List<(string OrderId, decimal Amount, long Time)>();
            long Watermark() => maxTime - s.OutOfOrder;
            var size = 60 * Second;
            var hop = 90 * Second;
            var advance = 30 * Second;
            foreach (var (_, message) in inputs)
            {
                if (message is Order order)
                {
                    var t = order.PlacedAt.UtcTicks;
                    maxTime = Math.Max(maxTime, t);
                    if (order.Amount == 5)
                    {
                        continue;
                    }

                    var amount = order.Amount * 10;
                    var start = t - Mod(t, size);
                    if (start + size + s.Grace <= Watermark())
                    {
                        late.Add(order.OrderId);
                    }
                    else
                    {
                        sums[(order.ProductId, start)] = sums.GetValueOrDefault((order.ProductId, start)) + amount;
                    }

                    for (var h = t - Mod(t, advance) - hop + advance; h <= t; h += advance)
                    {
                        if (h + hop + s.Grace > Watermark())
                        {
                            counts[(order.ProductId, h)] = counts.GetValueOrDefault((order.ProductId, h)) + 1;
                        }
                    }

                    if (t + s.JoinGrace >= Watermark())
                    {
                        lefts.Add((order.OrderId, amount, t));
                    }
                }
                else if (message is Payment paid)
                {
                    var t = paid.PaidAt.UtcTicks;
                    maxTime = Math.Max(maxTime, t);
                    if (t + s.JoinGrace >= Watermark())
                    {
                        rights.Add((paid.OrderId, paid.Amount, t));
                    }
                }
            }

            var end = Watermark();
            var expectedSums = sums.Where(w => w.Key.Item2 + size + s.Grace <= end)
                .Select(w => $"{w.Key.Item1}@{Fmt(w.Key.Item2)}={w.Value.ToString(CultureInfo.InvariantCulture)}").Order(StringComparer.Ordinal).ToList();
            var expectedCounts = counts.Where(w => w.Key.Item2 + hop + s.Grace <= end)
                .Select(w => $"{w.Key.Item1}@{Fmt(w.Key.Item2)}={w.Value}").Order(StringComparer.Ordinal).ToList();
            var expectedPairs = (from l in lefts
                                 from r in rights
                                 where l.OrderId == r.OrderId && Math.Abs(l.Time - r.Time) <= s.Within
                                 select $"{l.OrderId}:{l.Amount.ToString(CultureInfo.InvariantCulture)}:{r.Amount.ToString(CultureInfo.InvariantCulture)}")
                .Order(StringComparer.Ordinal).ToList();
            var expectedLate = late.Order(StringComparer.Ordinal).ToList();

            // What the sinks appended.
            var events = host.Services.GetRequiredService<IEventStore>();
            var serializer = host.Services.GetRequiredService<IMessageSerializer>();
            var actualSums = new List<string>();
            var actualCounts = new List<string>();
            var actualPairs = new List<string>();
            var actualLate = new List<string>();

            // Stream by stream, not through $all: the last commits' outputs sit above the readable head of $all while another
            // test's transaction is open, and $all waits only for the reader's own appends.
            string[] streams =
            [
                .. Products.SelectMany(p => new[] { "msum-" + p, "mcount-" + p, "mlate-" + p }),
                .. Enumerable.Range(0, OrderCount).Select(i => "mpair-o" + i),
            ];
            var recordedOutputs = new List<RecordedEvent>();
            foreach (var stream in streams)
            {
                await foreach (var recorded in events.ReadStreamAsync(stream))
                {
                    recordedOutputs.Add(recorded);
                }
            }

            foreach (var recorded in recordedOutputs)
            {
                switch (recorded.Envelope.MessageType)
                {
                    case "model-window":
                        var w = (ModelWindow)serializer.Deserialize(recorded.Envelope.Body, typeof(ModelWindow));
                        (w.Kind == "sum" ? actualSums : actualCounts).Add($"{w.Key}@{Fmt(w.Start.UtcTicks)}={w.Value.ToString(CultureInfo.InvariantCulture)}");
                        break;
                    case "model-pair":
                        var p = (ModelPair)serializer.Deserialize(recorded.Envelope.Body, typeof(ModelPair));
                        actualPairs.Add($"{p.OrderId}:{p.OrderAmount.ToString(CultureInfo.InvariantCulture)}:{p.PaymentId.ToString(CultureInfo.InvariantCulture)}");
                        break;
                    case "model-late":
                        actualLate.Add(((ModelLate)serializer.Deserialize(recorded.Envelope.Body, typeof(ModelLate))).OrderId);
                        break;
                }
            }

            Write($"model: {expectedSums.Count} sums, {expectedCounts.Count} counts, {expectedPairs.Count} pairs, {expectedLate.Count} late");
            var problems = new StringBuilder();
            Compare(problems, "tumbling sums", expectedSums, actualSums);
            Compare(problems, "hopping counts", expectedCounts, actualCounts);
            Compare(problems, "joined pairs", expectedPairs, actualPairs);
            Compare(problems, "late orders", expectedLate, actualLate);
            Assert.True(problems.Length == 0, problems.ToString());
        }

        private static void Compare(StringBuilder problems, string what, List<string> expected, List<string> actual)
        {
            actual.Sort(StringComparer.Ordinal);
            var missing = expected.Except(actual).ToList();
            var unexpected = actual.Except(expected).ToList();
            var twice = actual.GroupBy(a => a).Where(g => g.Count() > 1).Select(g => $"{g.Key} x{g.Count()}").ToList();
            if (missing.Count + unexpected.Count + twice.Count > 0)
            {
                problems.AppendLine(CultureInfo.InvariantCulture,
                    $"{what}: {expected.Count} expected, {actual.Count} appended; missing [{string.Join(", ", missing.Take(10))}]; unexpected [{string.Join(", ", unexpected.Take(10))}]; appended more than once [{string.Join(", ", twice.Take(10))}]");
            }
        }

        private static long Mod(long value, long by) => ((value % by) + by) % by;

        private static string Fmt(long ticks) => new DateTimeOffset(ticks, TimeSpan.Zero).ToString("HH:mm:ss", CultureInfo.InvariantCulture);

        private string ApplicationName(string member) => $"hm-{schema[^12..]}-{member}";

        private async Task<IHost> StartHostAsync(string member)
        {
            var builder = Host.CreateApplicationBuilder();
            builder.Logging.ClearProviders();
            var connection = new NpgsqlConnectionStringBuilder(TestPostgres.ConnectionString) { ApplicationName = ApplicationName(member) }.ConnectionString;
            builder.Services.AddHerald(h =>
            {
                h.AddMessageType<Order>("model-order");
                h.AddMessageType<Payment>("model-payment");
                h.AddMessageType<ModelWindow>("model-window");
                h.AddMessageType<ModelPair>("model-pair");
                h.AddMessageType<ModelLate>("model-late");
                h.UsePostgres(connection, o => o.Schema = schema).UsePostgresStreamState();
            });
            var host = builder.Build();
            await host.StartAsync();
            return host;
        }

        private static string Owned(Member member) => "[" + string.Join(",", member.Processor?.OwnedPartitions ?? []) + "]";

        private void Write(string line)
        {
            lock (Log)
            {
                Log.AppendLine(CultureInfo.InvariantCulture, $"{DateTime.UtcNow:HH:mm:ss.fff} {line}");
            }
        }

        public async ValueTask DisposeAsync()
        {
            foreach (var member in _members.ToList())
            {
                try
                {
                    await StopMemberAsync(member);
                }
                catch (Exception ex)
                {
                    Write($"disposing m{member.Id}: {ex.Message}");
                }
            }
        }
    }

    private sealed class Member(int id, IHost host)
    {
        public int Id { get; } = id;

        public IHost Host { get; } = host;

        public StreamProcessor Processor { get; set; } = null!;

        public volatile bool Crashing;

        public volatile bool Killed;
    }
}

public sealed record ModelWindow(string Kind, string Key, DateTimeOffset Start, decimal Value);

public sealed record ModelPair(string OrderId, decimal OrderAmount, decimal PaymentId);

public sealed record ModelLate(string OrderId);
