using System.Collections.Concurrent;
using System.Text;
using System.Text.RegularExpressions;
using Herald.Conformance;
using Herald.Handling;
using Herald.Messages;
using Herald.Persistence;
using Herald.Reliability.DeadLetters;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using RabbitMQ.Client;
using Xunit.Abstractions;

namespace Herald.RabbitMQ.Tests.Faults;

/// <summary>
/// A seeded model of the dead-letter path while the dead-letter store goes down and comes back at random moments: one or
/// two hosts consume one endpoint, their dead letters in one SQLite file behind a switch that makes every call throw as an
/// unreachable database would. Good and poison messages are sent through a host's <see cref="IMessageBus"/>; malformed ones
/// (a body that is not JSON, an unknown type, no id) are published by a plain AMQP client. Hosts stop (gracefully or
/// abruptly) and start, and the broker closes their connections. Checked against docs/reliability.md ("Dead letters") and
/// docs/rabbitmq.md ("Dead letters"): the queue's <c>{q}.dead-letter</c> is only the fallback while the store is down, and
/// is drained into it once it is back:
/// <list type="bullet">
/// <item>at the end (store up, two hosts running), every poison and malformed message is in the store exactly once, with a
/// reason, and <see cref="DeadLetterManager"/> lists it; no good message is dead-lettered, each is handled. The one exception
/// the docs make: a malformed message claims no version 7 id, so it gets a new dead-letter id each delivery, and one
/// redelivered after a lost ack (a fault since its publish) is stored once more, at most once per fault;</item>
/// <item>the queue, its retry queues and its dead-letter queue end with 0 ready and 0 unacked, with a consumer per host;</item>
/// <item>a handler runs at most its fate's runs plus one per fault since its first run (no loop).</item>
/// </list>
/// A failure prints the seed, the violations, the messages and the operation log.
/// </summary>
public sealed partial class DeadLetterOutageModelTests(ITestOutputHelper output) : RabbitMqTestBase
{
    private const int DelayedRetries = 1;
    private const int MaxAttempts = 1 + 1 + DelayedRetries;
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(25);

    /// <summary>Fixed seeds, so a failure names one that reproduces it.</summary>
    public static TheoryData<int> Seeds => [1, 2, 3];

    [Theory]
    [MemberData(nameof(Seeds))]
    public async Task Model_DeadLetterStoreGoesDownAndComesBack_WhileHostsStopAndConnectionsDie_EveryBadMessageEndsInTheStoreOnce_AndTheDeadLetterQueueEmpties(int seed)
    {
        var run = new ModelRun(this, output, seed);
        try
        {
            await run.RunAsync();
        }
        finally
        {
            await run.DisposeAsync();
        }
    }

    public enum Fate
    {
        Succeeds,
        Poison,
        NotJson,
        UnknownType,
        MissingId,
    }

    public sealed record ModelMessage(int Seq);

    public sealed class Spec(int seq, Fate fate)
    {
        public int Seq { get; } = seq;
        public Fate Fate { get; } = fate;
        public string Send { get; set; } = "sending";
        public int Runs;
        public int Completions;
        public int FaultsAtFirstRun = -1;
        public int FaultsAtPublish;

        public bool DeadLetters => Fate != Fate.Succeeds;

        /// <summary>Published by a plain client, not decodable, and without a version 7 id (docs/reliability.md, "Dead letters").</summary>
        public bool Malformed => Fate is Fate.NotJson or Fate.UnknownType or Fate.MissingId;

        public int BaseRuns => Fate switch
        {
            Fate.Succeeds => 1,
            Fate.Poison => MaxAttempts,
            _ => 0,
        };

        public override string ToString() => $"#{Seq} {Fate} send={Send} runs={Runs} completions={Completions}";
    }

    /// <summary>What every host's handler and store read and write: the specs, the store's switch, the log, the faults.</summary>
    public sealed class Model : ModelLog
    {
        public ConcurrentDictionary<int, Spec> Specs { get; } = new();

        public volatile bool StoreDown;

        /// <summary>Dead letters the store refused while down, and those it added: how much of the fallback a run used.</summary>
        public int Refused;
        public int Added;
    }

    public sealed class ModelHandler(Model model, ModelHostTag host) : IMessageHandler<ModelMessage>
    {
        public ValueTask HandleAsync(ModelMessage message, MessageContext context, CancellationToken cancellationToken)
        {
            var spec = model.Specs[message.Seq];
            Interlocked.Increment(ref spec.Runs);
            Interlocked.CompareExchange(ref spec.FaultsAtFirstRun, Volatile.Read(ref model.Faults), -1);
            model.Log($"h{host.Number} runs #{spec.Seq} {spec.Fate} attempt {context.Attempt}");
            model.Progress.Release();
            if (spec.Fate == Fate.Poison)
            {
                throw new InvalidOperationException($"#{spec.Seq} is poison");
            }

            context.UnitOfWork.OnCommitted(_ =>
            {
                Interlocked.Increment(ref spec.Completions);
                model.Log($"h{host.Number} #{spec.Seq} completed");
                return ValueTask.CompletedTask;
            });
            return ValueTask.CompletedTask;
        }
    }

    /// <summary>The host's real dead-letter store, every call of which throws while the model says the store is down.</summary>
    public sealed class SwitchedDeadLetterStore(IDeadLetterStore inner, Model model, ModelHostTag host) : IDeadLetterStore
    {
        public async ValueTask<bool> AddAsync(DeadLetter deadLetter, CancellationToken cancellationToken = default)
        {
            ThrowIfDown("add", deadLetter);
            var added = await inner.AddAsync(deadLetter, cancellationToken);
            Interlocked.Increment(ref model.Added);
            model.Log($"h{host.Number} store: {(added ? "added" : "already had")} {deadLetter.Id} ({Describe(deadLetter)})");
            return added;
        }

        public ValueTask AddAsync(DeadLetter deadLetter, IUnitOfWork unitOfWork, Action<bool>? added = null, CancellationToken cancellationToken = default)
        {
            ThrowIfDown("add in a unit of work", deadLetter);
            return inner.AddAsync(deadLetter, unitOfWork, added, cancellationToken);
        }

        public ValueTask<DeadLetter?> GetAsync(Guid id, CancellationToken cancellationToken = default)
        {
            ThrowIfDown("get");
            return inner.GetAsync(id, cancellationToken);
        }

        public ValueTask<IReadOnlyList<DeadLetter>> ListAsync(DeadLetterQuery query, CancellationToken cancellationToken = default)
        {
            ThrowIfDown("list");
            return inner.ListAsync(query, cancellationToken);
        }

        public ValueTask<long> CountAsync(DeadLetterQuery query, CancellationToken cancellationToken = default)
        {
            ThrowIfDown("count");
            return inner.CountAsync(query, cancellationToken);
        }

        public ValueTask<bool> DeleteAsync(Guid id, CancellationToken cancellationToken = default)
        {
            ThrowIfDown("delete");
            return inner.DeleteAsync(id, cancellationToken);
        }

        public ValueTask DeleteAsync(Guid id, IUnitOfWork unitOfWork, CancellationToken cancellationToken = default)
        {
            ThrowIfDown("delete in a unit of work");
            return inner.DeleteAsync(id, unitOfWork, cancellationToken);
        }

        public ValueTask<int> DeleteManyAsync(DeadLetterQuery query, CancellationToken cancellationToken = default)
        {
            ThrowIfDown("delete many");
            return inner.DeleteManyAsync(query, cancellationToken);
        }

        public ValueTask<bool> RecordRetryFailureAsync(Guid id, string error, DateTimeOffset time, CancellationToken cancellationToken = default)
        {
            ThrowIfDown("record a retry failure");
            return inner.RecordRetryFailureAsync(id, error, time, cancellationToken);
        }

        private void ThrowIfDown(string call, DeadLetter? deadLetter = null)
        {
            if (model.StoreDown)
            {
                if (deadLetter is not null)
                {
                    Interlocked.Increment(ref model.Refused);
                    model.Log($"h{host.Number} store: refused {deadLetter.Id} ({Describe(deadLetter)}), down");
                }

                throw new InvalidOperationException($"the dead-letter database is unreachable ({call})");
            }
        }
    }

    internal static int? SeqOf(DeadLetter deadLetter) =>
        SeqPattern().Match(Encoding.UTF8.GetString(deadLetter.Envelope.Body.Span)) is { Success: true } match ? int.Parse(match.Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture) : null;

    private static string Describe(DeadLetter deadLetter) => $"#{SeqOf(deadLetter)} {deadLetter.Cause}";

    [GeneratedRegex("\"seq\":(\\d+)")]
    private static partial Regex SeqPattern();

    private sealed class ModelRun : IAsyncDisposable
    {
        private readonly ITestOutputHelper _output;
        private readonly int _seed;
        private readonly Random _random;
        private readonly Model _model = new();
        private readonly TestOutputLogger _logs = new(LogLevel.Warning);
        private readonly ModelHosts _hosts;
        private readonly List<Task> _sends = [];
        private readonly string _endpoint;
        private readonly string _type;
        private readonly string _folder;
        private readonly string _rawName;
        private IConnection? _raw;
        private IChannel? _rawChannel;
        private int _nextSeq;

        public ModelRun(DeadLetterOutageModelTests test, ITestOutputHelper output, int seed)
        {
            _output = output;
            _seed = seed;
            _random = new Random(seed);
            _endpoint = test.Name("dlmodel");
            _type = test.Name("msg");
            _rawName = test.Prefix + "-raw";
            _folder = Path.Combine(Path.GetTempPath(), test.Prefix);
            Directory.CreateDirectory(_folder);
            _hosts = new ModelHosts(test.Prefix, _random, _logs, _model, Configure);
        }

        public async Task RunAsync()
        {
            _output.WriteLine($"seed {_seed}");
            var failures = new List<string>();
            try
            {
                await _hosts.StartAsync();
                _raw = await BrokerAdmin.ConnectAsync(_rawName);
                _rawChannel = await _raw.CreateChannelAsync(new CreateChannelOptions(publisherConfirmationsEnabled: true, publisherConfirmationTrackingEnabled: true));
                for (var step = 0; step < 32; step++)
                {
                    switch (_random.Next(14))
                    {
                        case < 3:
                            Send(1 + _random.Next(3));
                            break;
                        case < 5:
                            await PublishMalformedAsync();
                            break;
                        case 5:
                        case 6:
                            _model.StoreDown = !_model.StoreDown;
                            _model.Log($"driver: the dead-letter store is {(_model.StoreDown ? "down" : "back")}");
                            break;
                        case 7:
                            await _hosts.KillConnectionsAsync(_random.Next(3) == 0 ? "consume" : null);
                            break;
                        case 8 when _hosts.Count < 2:
                            await _hosts.StartAsync();
                            break;
                        case 8:
                            await _hosts.StopAsync(abruptly: false);
                            break;
                        case 9 when _hosts.Count > 1:
                            await _hosts.StopAsync(abruptly: true);
                            break;
                        default:
                            await WaitForProgressAsync();
                            break;
                    }
                }

                _model.StoreDown = false;
                _model.Log("driver: end of the faults, the dead-letter store is back");
                while (_hosts.Count < 2)
                {
                    await _hosts.StartAsync();
                }

                await Task.WhenAll(_sends).WaitAsync(Deadline);
                await CheckAsync(failures);
            }
            catch (Exception ex)
            {
                failures.Add($"the run threw: {ex}");
            }

            _output.WriteLine($"{_model.Specs.Values.GroupBy(s => s.Fate).Select(g => $"{g.Count()} {g.Key}").Aggregate((a, b) => a + ", " + b)}; "
                + $"the store refused {_model.Refused} dead letters while down and took {_model.Added}; {_model.Faults} faults; "
                + $"sends not confirmed: {string.Join(", ", _model.Specs.Values.Where(s => s.Send != "confirmed"))}");
            ModelReport.FailIfAny(_output, _seed, failures, "specs", _model.Specs.Values.OrderBy(s => s.Seq), _model, _logs);
        }

        private async Task CheckAsync(List<string> failures)
        {
            var expected = _model.Specs.Values.Where(s => s.Send == "confirmed").ToList();
            try
            {
                await Eventually.UntilAsync(
                    async () =>
                    {
                        var stored = await StoredAsync();
                        return expected.All(s => s.DeadLetters ? stored.ContainsKey(s.Seq) : Volatile.Read(ref s.Completions) > 0)
                            && await _hosts.QueuesSettledAsync(_endpoint);
                    },
                    "every confirmed bad message is in the dead-letter store, every good one handled, and the queues empty",
                    Deadline);
            }
            catch (Exception ex)
            {
                failures.Add(ex.Message);
            }

            var byId = await StoredAsync();
            var manager = _hosts.First.Services.GetRequiredService<DeadLetterManager>();
            var listed = (await manager.ListAsync(new DeadLetterQuery { Endpoint = _endpoint, Limit = DeadLetterQuery.MaxLimit })).Items;
            foreach (var spec in _model.Specs.Values.OrderBy(s => s.Seq))
            {
                var records = byId.GetValueOrDefault(spec.Seq) ?? [];
                var most = spec.Malformed ? 1 + Math.Max(0, Volatile.Read(ref _model.Faults) - spec.FaultsAtPublish) : 1;
                if (spec.Send == "confirmed" && spec.DeadLetters && (records.Count < 1 || records.Count > most))
                {
                    var allowed = most == 1 ? "once" : $"from once to {most} times (a new id each delivery, {most - 1} fault(s) since its publish)";
                    failures.Add($"{spec} is in the dead-letter store {records.Count} times, not {allowed}{string.Concat(records.Select(r => $"; {r.Id} {r.Cause}: {r.ErrorMessage}"))}");
                }

                if (spec.Send == "confirmed" && !spec.DeadLetters && spec.Completions == 0)
                {
                    failures.Add($"lost: {spec} was confirmed but never handled");
                }

                foreach (var record in records)
                {
                    if (!spec.DeadLetters)
                    {
                        failures.Add($"dead-lettered although its handler succeeds: {spec} ({record.Cause}: {record.ErrorMessage})");
                    }

                    if (string.IsNullOrWhiteSpace(record.ErrorMessage) || string.IsNullOrWhiteSpace(record.ErrorType))
                    {
                        failures.Add($"{spec} is stored without its reason: {record.Id} {record.Cause} '{record.ErrorType}: {record.ErrorMessage}'");
                    }

                    if (record.Endpoint != _endpoint)
                    {
                        failures.Add($"{spec} is stored under the endpoint '{record.Endpoint}', not '{_endpoint}'");
                    }

                    if (record.Envelope.GetHeader(HeaderNames.DeadLetterReason) is not null)
                    {
                        failures.Add($"{spec} is stored with the native copy's header {HeaderNames.DeadLetterReason}");
                    }

                    if (!listed.Any(l => l.Id == record.Id))
                    {
                        failures.Add($"{spec}'s dead letter {record.Id} is not listed by the DeadLetterManager");
                    }
                }

                if (spec.Fate is Fate.Poison && records.Count == 1 && records[0].Cause != DeadLetterCause.RetriesExhausted)
                {
                    failures.Add($"{spec} is stored as {records[0].Cause}, not RetriesExhausted");
                }

                if (spec.Malformed && records.FirstOrDefault(r => r.Cause is DeadLetterCause.RetriesExhausted or DeadLetterCause.TransportDeadLettered) is { } wrong)
                {
                    failures.Add($"{spec} is stored as {wrong.Cause}");
                }

                var faults = spec.FaultsAtFirstRun < 0 ? 0 : Volatile.Read(ref _model.Faults) - spec.FaultsAtFirstRun;
                if (spec.Runs > spec.BaseRuns + faults)
                {
                    failures.Add($"ran {spec.Runs} times, more than {spec.BaseRuns} + {faults} faults since its first run: {spec}");
                }
            }

            if (listed.Count != byId.Values.Sum(r => r.Count))
            {
                failures.Add($"the DeadLetterManager lists {listed.Count} dead letters of the endpoint, the store holds {byId.Values.Sum(r => r.Count)}");
            }

            if (!await _hosts.QueuesSettledAsync(_endpoint))
            {
                failures.Add($"the queues of '{_endpoint}' (the dead-letter queue among them) did not end with 0 ready and 0 unacked and a consumer per host");
            }
        }

        private async Task<Dictionary<int, List<DeadLetter>>> StoredAsync()
        {
            var store = _hosts.First.Services.GetRequiredService<IDeadLetterStore>();
            var bySeq = new Dictionary<int, List<DeadLetter>>();
            foreach (var deadLetter in await store.ListAsync(new DeadLetterQuery { Limit = DeadLetterQuery.MaxLimit }))
            {
                var seq = SeqOf(deadLetter) ?? -1;
                if (!bySeq.TryGetValue(seq, out var records))
                {
                    bySeq[seq] = records = [];
                }

                records.Add(deadLetter);
            }

            return bySeq;
        }

        private void Send(int count)
        {
            var (number, host) = _hosts.Pick();
            var bus = host.Services.GetRequiredService<IMessageBus>();
            for (var i = 0; i < count; i++)
            {
                var spec = new Spec(++_nextSeq, _random.Next(3) == 0 ? Fate.Poison : Fate.Succeeds);
                _model.Specs[spec.Seq] = spec;
                _model.Log($"driver: h{number} sends #{spec.Seq} {spec.Fate}");
                _sends.Add(SendAsync(bus, spec));
            }
        }

        private async Task SendAsync(IMessageBus bus, Spec spec)
        {
            try
            {
                await bus.SendAsync(new ModelMessage(spec.Seq));
                spec.Send = "confirmed";
                _model.Log($"send #{spec.Seq} confirmed");
            }
            catch (Exception ex)
            {
                spec.Send = "threw";
                _model.Log($"send #{spec.Seq} threw {ex.GetType().Name}: {ex.Message}");
            }
        }

        /// <summary>A message a plain AMQP client publishes that Herald cannot decode: not JSON, an unknown type, or no id.</summary>
        private async Task PublishMalformedAsync()
        {
            var fate = (Fate)((int)Fate.NotJson + _random.Next(3));
            var spec = new Spec(++_nextSeq, fate) { FaultsAtPublish = Volatile.Read(ref _model.Faults) };
            _model.Specs[spec.Seq] = spec;
            var now = new AmqpTimestamp(DateTimeOffset.UtcNow.ToUnixTimeSeconds());
            var (properties, body) = fate switch
            {
                Fate.NotJson => (new BasicProperties { MessageId = Guid.NewGuid().ToString(), Type = _type, Timestamp = now }, $"{{\"seq\":{spec.Seq}, not json"),
                Fate.UnknownType => (new BasicProperties { MessageId = Guid.NewGuid().ToString(), Type = _type + "-unknown", Timestamp = now }, $"{{\"seq\":{spec.Seq}}}"),
                _ => (new BasicProperties { Type = _type, Timestamp = now }, $"{{\"seq\":{spec.Seq}}}"),
            };
            _model.Log($"driver: raw client publishes #{spec.Seq} {fate}");
            await _rawChannel!.BasicPublishAsync(string.Empty, _endpoint, mandatory: false, properties, Encoding.UTF8.GetBytes(body));
            spec.Send = "confirmed";
        }

        private void Configure(HostApplicationBuilder builder, int number)
        {
            var tag = new ModelHostTag(number);
            builder.Services.AddSingleton(_model).AddSingleton(tag);
            builder.Services.AddHerald(h => h
                .UseSqlite(Path.Combine(_folder, "herald.db"))
                .UseRabbitMq(o =>
                {
                    o.ConnectionUri = BrokerAdmin.AmqpUri;
                    o.ClientProvidedName = _hosts.Name(number);
                    o.NetworkRecoveryInterval = TimeSpan.FromMilliseconds(250);
                })
                .AddMessageType<ModelMessage>(_type)
                .AddHandler<ModelHandler>()
                .ConfigureRetries(r => r.Immediate(1).Delayed(DelayedRetries, TimeSpan.FromMilliseconds(50), TimeSpan.FromMilliseconds(100)))
                .ConfigureDeadLetters(o => o.DrainInterval = TimeSpan.FromMilliseconds(200))
                .Configure(o =>
                {
                    o.EndpointName = _endpoint;
                    o.MaxConcurrency = 4;
                }));

            // The real store (SQLite), behind the model's switch.
            var real = builder.Services.Last(d => d.ServiceType == typeof(IDeadLetterStore));
            builder.Services.Remove(real);
            builder.Services.AddSingleton<IDeadLetterStore>(sp => new SwitchedDeadLetterStore((IDeadLetterStore)real.ImplementationFactory!(sp), _model, tag));
        }

        private async Task WaitForProgressAsync()
        {
            // Lets handlers and drains move on between the driver's steps: the next handler run, or a quiet moment.
            var moved = await _model.Progress.WaitAsync(TimeSpan.FromMilliseconds(300));
            _model.Log($"driver: waited ({(moved ? "a handler moved" : "quiet")})");
        }

        public async ValueTask DisposeAsync()
        {
            await _hosts.DisposeAsync();
            if (_rawChannel is not null)
            {
                await _rawChannel.DisposeAsync();
            }

            if (_raw is not null)
            {
                await _raw.DisposeAsync();
            }

            try
            {
                Directory.Delete(_folder, recursive: true);
            }
            catch (IOException)
            {
            }
        }
    }
}
