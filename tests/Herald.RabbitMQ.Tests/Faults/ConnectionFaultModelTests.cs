using System.Collections.Concurrent;
using System.Globalization;
using Herald.Conformance;
using Herald.Handling;
using Herald.Messages;
using Herald.Reliability.DeadLetters;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Xunit.Abstractions;

namespace Herald.RabbitMQ.Tests.Faults;

/// <summary>
/// A seeded model of one endpoint's queue consumed by one or two hosts (competing) while the broker closes their
/// connections (management API), hosts stop gracefully (a short deadline) or abruptly (an already-cancelled stop), and new
/// ones start. Sends go through a live host's <see cref="IMessageBus"/> with publisher confirms, some left in flight across
/// the faults. Handlers succeed, throw once, always throw (poison: retried, then dead-lettered), or hold on a signal the
/// driver releases later (or their cancellation). Checked against docs/rabbitmq.md and docs/reliability.md:
/// <list type="bullet">
/// <item>every send that completed (confirmed) is handled to success, or, poison, dead-lettered, with nothing left behind;</item>
/// <item>only poison messages are dead-lettered, recording at least <c>MaxAttempts</c> attempts, after <c>MaxAttempts</c>
/// failed runs when no fault came since the send, else after at least <c>DelayedRetries</c>: docs/rabbitmq.md ("Delivery
/// attempts") counts a classic queue's redelivered flag as one more delivery, and docs/reliability.md makes delivery d
/// attempt <c>ImmediateRetries + d</c>, so a copy the broker took back (even one never run) spends the immediate retries
/// and one delayed retry; with two delayed retries a message failing once (throws-once) still never reaches the dead letters;</item>
/// <item>a message's handler runs at most its fate's runs (1, 2 for throws-once, <c>MaxAttempts</c> for poison) plus one per
/// fault from the driver since the message was first run (a lost ack, a handed-back delivery: at-least-once);</item>
/// <item>the queue, its retry queues and its fallback dead-letter queue end with 0 ready and 0 unacked, and each live
/// host consumes (it resumed after its connection was killed, without a restart).</item>
/// </list>
/// A failure prints the seed, the violations and the operation log.
/// </summary>
public sealed class ConnectionFaultModelTests(ITestOutputHelper output) : RabbitMqTestBase
{
    private const int DelayedRetries = 2;
    private const int MaxAttempts = 2 + DelayedRetries;
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(25);

    /// <summary>Fixed seeds, so a failure names one that reproduces it.</summary>
    public static TheoryData<int> Seeds => [1, 2, 3];

    [Theory]
    [MemberData(nameof(Seeds))]
    public async Task Model_ConnectionsKilledAndHostsStoppedWhilePublishingAndConsuming_LosesNothing_AndDeadLettersOnlyPoison(int seed)
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
        ThrowsOnce,
        Holds,
        Poison,
    }

    public sealed record ModelMessage(int Seq);

    public sealed class Spec(int seq, Fate fate)
    {
        public int Seq { get; } = seq;
        public Fate Fate { get; } = fate;
        public TaskCompletionSource Gate { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
        public string Send { get; set; } = "sending";
        public int Runs;
        public int Failures;
        public int Completions;
        public int FaultsAtFirstRun = -1;
        public int FaultsAtSend;

        public int BaseRuns => Fate switch
        {
            Fate.ThrowsOnce => 2,
            Fate.Poison => MaxAttempts,
            _ => 1,
        };

        public override string ToString() => $"#{Seq} {Fate} send={Send} runs={Runs} failures={Failures} completions={Completions}";
    }

    /// <summary>What every host's handler reads and writes: the specs, the operation log, the count of faults so far.</summary>
    public sealed class Model : ModelLog
    {
        public ConcurrentDictionary<int, Spec> Specs { get; } = new();

        public volatile bool ReleaseAll;
    }

    public sealed class ModelHandler(Model model, ModelHostTag host) : IMessageHandler<ModelMessage>
    {
        public async ValueTask HandleAsync(ModelMessage message, MessageContext context, CancellationToken cancellationToken)
        {
            var spec = model.Specs[message.Seq];
            Interlocked.Increment(ref spec.Runs);
            Interlocked.CompareExchange(ref spec.FaultsAtFirstRun, Volatile.Read(ref model.Faults), -1);
            model.Log($"h{host.Number} runs #{spec.Seq} {spec.Fate} attempt {context.Attempt}");
            model.Progress.Release();
            try
            {
                switch (spec.Fate)
                {
                    case Fate.Holds when !model.ReleaseAll:
                        await spec.Gate.Task.WaitAsync(cancellationToken);
                        break;
                    case Fate.ThrowsOnce when Interlocked.Increment(ref spec.Failures) == 1:
                        throw new InvalidOperationException($"#{spec.Seq} fails once");
                    case Fate.ThrowsOnce:
                        Interlocked.Decrement(ref spec.Failures);
                        break;
                    case Fate.Poison:
                        Interlocked.Increment(ref spec.Failures);
                        throw new InvalidOperationException($"#{spec.Seq} is poison");
                }
            }
            catch (OperationCanceledException)
            {
                model.Log($"h{host.Number} #{spec.Seq} cancelled");
                model.Progress.Release();
                throw;
            }
            catch (InvalidOperationException)
            {
                model.Log($"h{host.Number} #{spec.Seq} failed attempt {context.Attempt}");
                model.Progress.Release();
                throw;
            }

            context.UnitOfWork.OnCommitted(_ =>
            {
                Interlocked.Increment(ref spec.Completions);
                model.Log($"h{host.Number} #{spec.Seq} completed");
                model.Progress.Release();
                return ValueTask.CompletedTask;
            });
        }
    }

    private sealed class ModelRun : IAsyncDisposable
    {
        private readonly ITestOutputHelper _output;
        private readonly int _seed;
        private readonly Random _random;
        private readonly Model _model = new();
        private readonly InMemoryDeadLetterStore _deadLetters = new();
        private readonly TestOutputLogger _logs = new(LogLevel.Warning);
        private readonly ModelHosts _hosts;
        private readonly List<Task> _sends = [];
        private readonly string _endpoint;
        private readonly string _type;
        private int _nextSeq;

        public ModelRun(ConnectionFaultModelTests test, ITestOutputHelper output, int seed)
        {
            _output = output;
            _seed = seed;
            _random = new Random(seed);
            _endpoint = test.Name("model");
            _type = test.Name("msg");
            _hosts = new ModelHosts(test.Prefix, _random, _logs, _model, Configure);
        }

        public async Task RunAsync()
        {
            _output.WriteLine($"seed {_seed}");
            var failures = new List<string>();
            try
            {
                await _hosts.StartAsync();
                for (var step = 0; step < 28; step++)
                {
                    switch (_random.Next(12))
                    {
                        case < 4:
                            Send(1 + _random.Next(4));
                            break;
                        case 4:
                            Release();
                            break;
                        case 5:
                        case 6:
                            await _hosts.KillConnectionsAsync(_random.Next(3) == 0 ? "consume" : null);
                            break;
                        case 7 when _hosts.Count < 2:
                            await _hosts.StartAsync();
                            break;
                        case 7:
                            await _hosts.StopAsync(abruptly: false);
                            break;
                        case 8 when _hosts.Count > 1:
                            await _hosts.StopAsync(abruptly: true);
                            break;
                        default:
                            await WaitForProgressAsync();
                            break;
                    }
                }

                _model.Log("driver: end of the faults, releasing every held handler");
                _model.ReleaseAll = true;
                foreach (var spec in _model.Specs.Values)
                {
                    spec.Gate.TrySetResult();
                }

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

            ModelReport.FailIfAny(_output, _seed, failures, "specs", _model.Specs.Values.OrderBy(s => s.Seq), _model, _logs);
        }

        private async Task CheckAsync(List<string> failures)
        {
            var settled = false;
            try
            {
                await Eventually.UntilAsync(
                    async () =>
                    {
                        var dead = await DeadLetteredAsync();
                        return _model.Specs.Values.Where(s => s.Send == "confirmed")
                            .All(s => s.Fate == Fate.Poison ? dead.ContainsKey(s.Seq) : Volatile.Read(ref s.Completions) > 0);
                    },
                    "every confirmed send is handled, or (poison) dead-lettered",
                    Deadline);
                settled = true;
            }
            catch (Exception ex)
            {
                failures.Add(ex.Message);
            }

            var deadLetters = await DeadLetteredAsync();
            foreach (var spec in _model.Specs.Values.OrderBy(s => s.Seq))
            {
                if (!settled && spec.Send == "confirmed" && (spec.Fate == Fate.Poison ? !deadLetters.ContainsKey(spec.Seq) : spec.Completions == 0))
                {
                    failures.Add($"lost: {spec} was confirmed but never {(spec.Fate == Fate.Poison ? "dead-lettered" : "handled")}");
                }

                if (deadLetters.TryGetValue(spec.Seq, out var deadLetter))
                {
                    if (spec.Fate != Fate.Poison)
                    {
                        failures.Add($"dead-lettered although its handler does not fail for good: {spec} ({deadLetter.Cause}: {deadLetter.ErrorMessage})");
                    }
                    else if (deadLetter.AttemptCount < MaxAttempts || spec.Failures < (Volatile.Read(ref _model.Faults) == spec.FaultsAtSend ? MaxAttempts : DelayedRetries))
                    {
                        failures.Add($"dead-lettered too early: {spec} (faults since its send: {Volatile.Read(ref _model.Faults) - spec.FaultsAtSend}), recorded {deadLetter.AttemptCount} attempts");
                    }
                }

                var faults = spec.FaultsAtFirstRun < 0 ? 0 : Volatile.Read(ref _model.Faults) - spec.FaultsAtFirstRun;
                if (spec.Runs > spec.BaseRuns + faults)
                {
                    failures.Add($"ran {spec.Runs} times, more than {spec.BaseRuns} + {faults} faults since its first run: {spec}");
                }
            }

            if (deadLetters.Count != deadLetters.Values.Select(d => d.Envelope.MessageId).Distinct().Count())
            {
                failures.Add("a message is in the dead-letter store twice");
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
        }

        private async Task<Dictionary<int, DeadLetter>> DeadLetteredAsync()
        {
            var list = await _deadLetters.ListAsync(new DeadLetterQuery { Limit = DeadLetterQuery.MaxLimit });
            var bySeq = new Dictionary<int, DeadLetter>();
            foreach (var deadLetter in list)
            {
                var message = System.Text.Json.JsonSerializer.Deserialize<ModelMessage>(deadLetter.Envelope.Body.Span, System.Text.Json.JsonSerializerOptions.Web)!;
                bySeq[message.Seq] = deadLetter;
            }

            return bySeq;
        }

        private void Send(int count)
        {
            var (number, host) = _hosts.Pick();
            var bus = host.Services.GetRequiredService<IMessageBus>();
            for (var i = 0; i < count; i++)
            {
                var fate = _random.Next(10) switch
                {
                    < 5 => Fate.Succeeds,
                    < 7 => Fate.ThrowsOnce,
                    < 9 => Fate.Holds,
                    _ => Fate.Poison,
                };
                var spec = new Spec(++_nextSeq, fate) { FaultsAtSend = Volatile.Read(ref _model.Faults) };
                _model.Specs[spec.Seq] = spec;
                _model.Log($"driver: h{number} sends #{spec.Seq} {fate}");
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

        private void Release()
        {
            var held = _model.Specs.Values.Where(s => s.Fate == Fate.Holds && !s.Gate.Task.IsCompleted).ToList();
            if (held.Count > 0)
            {
                var spec = held[_random.Next(held.Count)];
                _model.Log($"driver: releases #{spec.Seq}");
                spec.Gate.TrySetResult();
            }
        }

        private void Configure(HostApplicationBuilder builder, int number)
        {
            builder.Services.AddSingleton(_model).AddSingleton(new ModelHostTag(number)).AddSingleton<IDeadLetterStore>(_deadLetters);
            builder.Services.AddHerald(h => h
                .UseRabbitMq(o =>
                {
                    o.ConnectionUri = BrokerAdmin.AmqpUri;
                    o.ClientProvidedName = _hosts.Name(number);
                    o.NetworkRecoveryInterval = TimeSpan.FromMilliseconds(250);
                })
                .AddMessageType<ModelMessage>(_type)
                .AddHandler<ModelHandler>()
                .ConfigureRetries(r => r.Immediate(1).Delayed(DelayedRetries, TimeSpan.FromMilliseconds(50), TimeSpan.FromMilliseconds(100)))
                .Configure(o =>
                {
                    o.EndpointName = _endpoint;
                    o.MaxConcurrency = 4;
                }));
        }

        private async Task WaitForProgressAsync()
        {
            // Lets handlers move on between the driver's steps: the next handler event, or a quiet moment.
            var moved = await _model.Progress.WaitAsync(TimeSpan.FromMilliseconds(300));
            _model.Log($"driver: waited ({(moved ? "a handler moved" : "quiet")})");
        }

        public async ValueTask DisposeAsync()
        {
            _model.ReleaseAll = true;
            foreach (var spec in _model.Specs.Values)
            {
                spec.Gate.TrySetResult();
            }

            await _hosts.DisposeAsync();
        }
    }
}
