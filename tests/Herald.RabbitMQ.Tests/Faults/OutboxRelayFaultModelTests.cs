using System.Collections.Concurrent;
using System.Diagnostics;
using Herald.Conformance;
using Herald.Handling;
using Herald.Persistence;
using Herald.Reliability.DeadLetters;
using Herald.Reliability.Outbox;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Xunit.Abstractions;

namespace Herald.RabbitMQ.Tests.Faults;

/// <summary>
/// A seeded model of the transactional outbox relaying to RabbitMQ: one or two hosts on one SQLite file (outbox, inbox and
/// dead letters; the relay leader-elected across them by its lock file) run units of work that add sends (to the
/// endpoint's queue) and publishes (to the type's topic, bound to that queue) and then commit, roll back or are dropped
/// unfinished, while the broker closes their connections (both, or only the publishing one), hosts stop gracefully or
/// abruptly and new ones start, and the topic's exchange is deleted behind Herald's back (docs/rabbitmq.md: the publish
/// that meets it fails and Herald declares it again at next use, with its bindings). The connection faults reuse
/// <see cref="ConnectionFaultModelTests"/>' approach. Checked against docs/reliability.md ("Unit of work, inbox and
/// outbox", "Failed sends", "The outbox duplicate window"):
/// <list type="bullet">
/// <item>every message of a committed unit of work is handled, its effect exactly once (the inbox drops copies), and no
/// message of a rolled-back or unfinished one is ever delivered;</item>
/// <item>nothing is dead-lettered (no message is refused for good: a deleted exchange is declared again) and no outbox row
/// stays unsent while the broker is reachable (the relay resumes by itself after every fault);</item>
/// <item>each message reaches the consumer at most once plus once per fault since its commit (a kill between the publish
/// and its confirm resends it; the relay marks a row only after the broker confirmed it), and its handler runs at most
/// once plus once per fault since its first run;</item>
/// <item>the queue ends with 0 ready and 0 unacked, with a consumer per live host.</item>
/// </list>
/// A failure prints the seed, the violations, the messages and the operation log.
/// </summary>
public sealed class OutboxRelayFaultModelTests(ITestOutputHelper output) : RabbitMqTestBase
{
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(25);

    /// <summary>Fixed seeds, so a failure names one that reproduces it.</summary>
    public static TheoryData<int> Seeds => [1, 2, 3];

    [Theory]
    [MemberData(nameof(Seeds))]
    public async Task Model_OutboxRelayingWhileConnectionsAreKilled_HostsStop_AndTheTopicIsDeleted_DeliversEveryCommittedMessage_AndNoRolledBackOne(int seed)
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

    public enum Ending
    {
        Open,
        Committed,
        RolledBack,
        Dropped,
        CommitThrew,
    }

    public sealed record ModelMessage(int Seq);

    public sealed class Spec(int seq, bool publish)
    {
        public int Seq { get; } = seq;
        public bool Publish { get; } = publish;
        public Ending Ending { get; set; } = Ending.Open;
        public int FaultsAtCommit = -1;
        public int FaultsAtFirstRun = -1;
        public int Runs;
        public int Handled;
        public int Deliveries;

        public override string ToString() =>
            $"#{Seq} {(Publish ? "publish" : "send")} {Ending} deliveries={Deliveries} runs={Runs} handled={Handled}";
    }

    /// <summary>What every host's handler reads and writes: the messages, the operation log, the count of faults so far.</summary>
    public sealed class Model : ModelLog
    {
        public ConcurrentDictionary<int, Spec> Specs { get; } = new();

        /// <summary>Copies that reached a consumer's pipeline (before the inbox), by message id; mapped to a spec by its first run.</summary>
        public ConcurrentDictionary<string, int> Deliveries { get; } = new();

        public ConcurrentDictionary<string, int> SeqById { get; } = new();
    }

    public sealed class ModelHandler(Model model, ModelHostTag host) : IMessageHandler<ModelMessage>
    {
        public ValueTask HandleAsync(ModelMessage message, MessageContext context, CancellationToken cancellationToken)
        {
            var spec = model.Specs[message.Seq];
            model.SeqById.TryAdd(context.Envelope.MessageId.ToString(), spec.Seq);
            Interlocked.Increment(ref spec.Runs);
            Interlocked.CompareExchange(ref spec.FaultsAtFirstRun, Volatile.Read(ref model.Faults), -1);
            model.Log($"h{host.Number} runs #{spec.Seq} attempt {context.Attempt}");
            context.UnitOfWork.OnCommitted(_ =>
            {
                Interlocked.Increment(ref spec.Handled);
                model.Log($"h{host.Number} #{spec.Seq} handled");
                model.Progress.Release();
                return ValueTask.CompletedTask;
            });
            return ValueTask.CompletedTask;
        }
    }

    private sealed class ModelRun : IAsyncDisposable
    {
        private readonly ITestOutputHelper _output;
        private readonly int _seed;
        private readonly Random _random;
        private readonly Model _model = new();
        private readonly TestOutputLogger _logs = new(LogLevel.Warning);
        private readonly ModelHosts _hosts;
        private readonly string _endpoint;
        private readonly string _type;
        private readonly string _folder;
        private readonly ActivityListener _listener;
        private int _nextSeq;

        public ModelRun(OutboxRelayFaultModelTests test, ITestOutputHelper output, int seed)
        {
            _output = output;
            _seed = seed;
            _random = new Random(seed);
            _endpoint = test.Name("model");
            _type = test.Name("msg");
            _folder = Path.Combine(Path.GetTempPath(), test.Prefix);
            Directory.CreateDirectory(_folder);
            _hosts = new ModelHosts(test.Prefix, _random, _logs, _model, Configure);

            // Counts every copy that reaches a consumer's pipeline, the ones the inbox then drops included.
            var operation = "process " + _type;
            _listener = new ActivityListener
            {
                ShouldListenTo = source => source.Name == "Herald",
                Sample = (ref ActivityCreationOptions<ActivityContext> _) => ActivitySamplingResult.AllData,
                ActivityStarted = activity =>
                {
                    if (activity.OperationName == operation && activity.GetTagItem("messaging.message.id") is string id)
                    {
                        _model.Deliveries.AddOrUpdate(id, 1, (_, n) => n + 1);
                    }
                },
            };
            ActivitySource.AddActivityListener(_listener);
        }

        public async Task RunAsync()
        {
            _output.WriteLine($"seed {_seed}");
            var failures = new List<string>();
            try
            {
                await _hosts.StartAsync();
                for (var step = 0; step < 30; step++)
                {
                    switch (_random.Next(13))
                    {
                        case < 5:
                            await UnitOfWorkAsync();
                            break;
                        case 5:
                        case 6:
                            await _hosts.KillConnectionsAsync(_random.Next(2) == 0 ? "publish" : null);
                            break;
                        case 7:
                            await DeleteTopicAsync();
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

                _model.Log("driver: end of the faults");
                while (_hosts.Count < 2)
                {
                    await _hosts.StartAsync();
                }

                await CheckAsync(failures);
            }
            catch (Exception ex)
            {
                failures.Add($"the run threw: {ex}");
            }

            ModelReport.FailIfAny(_output, _seed, failures, "messages", _model.Specs.Values.OrderBy(s => s.Seq), _model, _logs);
        }

        private async Task CheckAsync(List<string> failures)
        {
            var host = _hosts.First;
            var outbox = host.Services.GetRequiredService<IOutboxStore>();
            var committed = _model.Specs.Values.Where(s => s.Ending == Ending.Committed).ToList();
            long pending = -1;
            try
            {
                await Eventually.UntilAsync(
                    async () =>
                    {
                        pending = await outbox.CountPendingAsync();
                        return pending == 0 && committed.All(s => Volatile.Read(ref s.Handled) > 0);
                    },
                    () => $"every committed message is handled and no outbox row is left unsent ({pending} pending; unhandled: {string.Join(", ", committed.Where(s => s.Handled == 0).Select(s => "#" + s.Seq))})",
                    Deadline);
            }
            catch (Exception ex)
            {
                failures.Add(ex.Message);
            }

            try
            {
                await Eventually.UntilAsync(
                    () => _hosts.QueuesSettledAsync(_endpoint),
                    $"the queues of '{_endpoint}' drain to 0 ready and 0 unacked, with a consumer per live host",
                    Deadline);
            }
            catch (Exception ex)
            {
                failures.Add(ex.Message);
            }

            foreach (var (id, count) in _model.Deliveries)
            {
                if (_model.SeqById.TryGetValue(id, out var seq))
                {
                    _model.Specs[seq].Deliveries = count;
                }
            }

            var faults = Volatile.Read(ref _model.Faults);
            foreach (var spec in _model.Specs.Values.OrderBy(s => s.Seq))
            {
                switch (spec.Ending)
                {
                    case Ending.Committed when spec.Handled != 1:
                        failures.Add($"{(spec.Handled == 0 ? "never handled" : "handled more than once")}: {spec} was committed");
                        break;
                    case Ending.RolledBack or Ending.Dropped when spec.Runs > 0 || spec.Handled > 0:
                        failures.Add($"delivered although its unit of work did not commit: {spec}");
                        break;
                    case Ending.CommitThrew when spec.Handled > 1:
                        failures.Add($"handled more than once: {spec}");
                        break;
                }

                if (spec.FaultsAtCommit >= 0 && spec.Deliveries > 1 + faults - spec.FaultsAtCommit)
                {
                    failures.Add($"delivered {spec.Deliveries} times, more than once plus {faults - spec.FaultsAtCommit} faults since its commit: {spec}");
                }

                if (spec.FaultsAtFirstRun >= 0 && spec.Runs > 1 + faults - spec.FaultsAtFirstRun)
                {
                    failures.Add($"ran {spec.Runs} times, more than once plus {faults - spec.FaultsAtFirstRun} faults since its first run: {spec}");
                }
            }

            foreach (var deadLetter in await host.Services.GetRequiredService<IDeadLetterStore>().ListAsync(new DeadLetterQuery { Limit = DeadLetterQuery.MaxLimit }))
            {
                failures.Add($"dead-lettered ({deadLetter.Cause}, endpoint '{deadLetter.Endpoint}'): {deadLetter.ErrorMessage}");
            }
        }

        private async Task UnitOfWorkAsync()
        {
            var (number, host) = _hosts.Pick();
            var count = 1 + _random.Next(6);
            var ending = _random.Next(10) switch
            {
                < 6 => Ending.Committed,
                < 8 => Ending.RolledBack,
                _ => Ending.Dropped,
            };
            var specs = new List<Spec>(count);
            await using (var scope = host.Services.CreateAsyncScope())
            {
                var outbox = scope.ServiceProvider.GetRequiredService<IOutbox>();
                var unitOfWork = scope.ServiceProvider.GetRequiredService<IUnitOfWork>();
                for (var i = 0; i < count; i++)
                {
                    var spec = new Spec(++_nextSeq, publish: _random.Next(2) == 0);
                    _model.Specs[spec.Seq] = spec;
                    specs.Add(spec);
                    if (spec.Publish)
                    {
                        await outbox.PublishAsync(new ModelMessage(spec.Seq));
                    }
                    else
                    {
                        await outbox.SendAsync(new ModelMessage(spec.Seq));
                    }
                }

                var seqs = string.Join(" ", specs.Select(s => $"#{s.Seq}{(s.Publish ? "p" : "s")}"));
                switch (ending)
                {
                    case Ending.Committed:
                        specs.ForEach(s => s.FaultsAtCommit = Volatile.Read(ref _model.Faults));
                        try
                        {
                            await unitOfWork.CommitAsync();
                            specs.ForEach(s => s.Ending = Ending.Committed);
                            _model.Log($"driver: h{number} committed {seqs}");
                        }
                        catch (Exception ex)
                        {
                            specs.ForEach(s => s.Ending = Ending.CommitThrew);
                            _model.Log($"driver: h{number} commit of {seqs} threw {ex.GetType().Name}: {ex.Message}");
                        }

                        break;
                    case Ending.RolledBack:
                        await unitOfWork.RollbackAsync();
                        specs.ForEach(s => s.Ending = Ending.RolledBack);
                        _model.Log($"driver: h{number} rolled back {seqs}");
                        break;
                    default:
                        specs.ForEach(s => s.Ending = Ending.Dropped);
                        _model.Log($"driver: h{number} dropped {seqs} unfinished");
                        break;
                }
            }
        }

        private async Task DeleteTopicAsync()
        {
            await BrokerAdmin.DeleteExchangeAsync(_type);
            Interlocked.Increment(ref _model.Faults);
            _model.Log($"driver: deleted the topic's exchange '{_type}'");
        }

        private void Configure(HostApplicationBuilder builder, int number)
        {
            builder.Services.AddSingleton(_model).AddSingleton(new ModelHostTag(number));
            builder.Services.AddHerald(h => h
                .UseSqlite(Path.Combine(_folder, "herald.db"))
                .UseRabbitMq(o =>
                {
                    o.ConnectionUri = BrokerAdmin.AmqpUri;
                    o.ClientProvidedName = _hosts.Name(number);
                    o.NetworkRecoveryInterval = TimeSpan.FromMilliseconds(250);
                })
                .UseOutbox(o =>
                {
                    o.PollInterval = TimeSpan.FromMilliseconds(100);
                    o.MinBackoff = TimeSpan.FromMilliseconds(50);
                    o.MaxBackoff = TimeSpan.FromMilliseconds(500);
                })
                .UseInbox()
                .AddMessageType<ModelMessage>(_type)
                .AddHandler<ModelHandler>()
                .Configure(o =>
                {
                    o.EndpointName = _endpoint;
                    o.MaxConcurrency = 4;
                }));
        }

        private async Task WaitForProgressAsync()
        {
            // Lets the relay and the handlers move on between the driver's steps: the next handled message, or a quiet moment.
            var moved = await _model.Progress.WaitAsync(TimeSpan.FromMilliseconds(300));
            _model.Log($"driver: waited ({(moved ? "a message was handled" : "quiet")})");
        }

        public async ValueTask DisposeAsync()
        {
            await _hosts.DisposeAsync();
            _listener.Dispose();
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
