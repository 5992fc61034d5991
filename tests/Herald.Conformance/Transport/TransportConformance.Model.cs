using System.Globalization;
using System.Text;
using Herald.Handling;
using Herald.Hosting;
using Herald.Messages;
using Herald.Reliability.DeadLetters;
using Herald.Reliability.Inbox;
using Herald.Transport;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Xunit;

namespace Herald.Conformance.Transport;

public abstract partial class TransportConformance
{
    private const string ModelType = "transport-model-work";
    private const int ModelImmediateRetries = 1;
    private const int ModelDelayedRetries = 2;
    private const int ModelMaxAttempts = 1 + ModelImmediateRetries + ModelDelayedRetries;
    private const int AlwaysFails = int.MaxValue;

    /// <summary>Messages each seed of the pipeline model test sends.</summary>
    protected virtual int PipelineModelMessages => 40;

    /// <summary>The seeds of the pipeline model test: fixed, so a failure names one that reproduces it.</summary>
    public static TheoryData<int> PipelineModelSeeds => [1, 2, 3];

    /// <summary>
    /// Why this transport's redeliveries do not carry the first-failure header (so a dead letter's first-failure time is
    /// its last failure's), or null when they do; the model then checks only that it lies within the message's runs.
    /// </summary>
    protected virtual string? PipelineModelLosesFirstFailure => null;

    /// <summary>
    /// How many messages sent right after a host stopped its last receive may still take (a receive that outlives its
    /// consumer's stop, whose messages are handed back, counted by the transport as a delivery); 0 where a stop ends its
    /// receives. The model then treats those messages as having met the restart.
    /// </summary>
    protected virtual int PipelineModelLateReceiveAfterStop => 0;

    /// <summary>
    /// A Herald host consuming the transport (decode, inbox, immediate and delayed retries, handler, settle, dead letters)
    /// runs a seeded batch: some messages with a partition key, some with a body that cannot be read, some sent with a delay,
    /// each with a fate its handler plays per attempt (succeed, fail k times then succeed, always fail), while the host is
    /// stopped and a new one started at seeded points. Each message ends handled once or dead-lettered once (with the
    /// handler's last error and the attempts it ran), never both; an undecodable one is dead-lettered as such, unhandled;
    /// no message runs more than MaxAttempts times unless a restart met it unsettled; a delayed one is not handled before
    /// it is due; and the queue is empty at the end.
    /// </summary>
    [Theory]
    [MemberData(nameof(PipelineModelSeeds))]
    public async Task Model_ConsumingThroughTheWholePipelineWithRetriesAndRestarts_MatchesTheReferenceModel(int seed)
    {
        var run = new PipelineModelRun(this, seed);
        try
        {
            await run.RunAsync();
        }
        finally
        {
            await run.DisposeAsync();
        }
    }

    private enum ModelFate
    {
        Succeeds,
        FailsThenSucceeds,
        AlwaysFails,
        Undecodable,
    }

    private sealed record ModelMessageSpec(int Seq, Guid Id, ModelFate Fate, int Failures, string? Key, TimeSpan? Delay)
    {
        public DateTimeOffset SentAt { get; set; }

        /// <summary>Restarts that began while the message was not yet handled nor dead-lettered.</summary>
        public int RestartsMet { get; set; }

        public bool Expires => Fate is ModelFate.AlwaysFails or ModelFate.Undecodable;

        public override string ToString() =>
            $"#{Seq} {Id.ToString()[^6..]} {Fate}" + (Fate == ModelFate.FailsThenSucceeds ? $"({Failures})" : string.Empty)
            + (Key is null ? string.Empty : $" key {Key[^1..]}") + (Delay is { } d ? $" delay {d.TotalMilliseconds:0} ms" : string.Empty)
            + (RestartsMet > 0 ? $" met {RestartsMet} restart(s)" : string.Empty);
    }

    /// <summary>One run of the handler: which attempt, how the transport counted the delivery, when, and the error it threw.</summary>
    private sealed record ModelInvocation(int Index, Guid Id, int Attempt, int DeliveryAttempt, DateTimeOffset At, int Host, string? Error);

    /// <summary>The work the model sends (its body is <c>{"seq":n}</c>).</summary>
    [MessageType(ModelType)]
    public sealed record ModelWork(int Seq);

    /// <summary>Records each run and plays the message's fate for the attempt: throw while the attempt is within its failures.</summary>
    private sealed class ModelWorkHandler(ModelRecorder recorder) : IMessageHandler<ModelWork>
    {
        /// <inheritdoc />
        public ValueTask HandleAsync(ModelWork message, MessageContext context, CancellationToken cancellationToken)
        {
            ArgumentNullException.ThrowIfNull(context);
            var error = recorder.Run(context.Envelope.MessageId, context.Attempt, context.Envelope.DeliveryAttempt);
            return error is null ? ValueTask.CompletedTask : ValueTask.FromException(new InvalidOperationException(error));
        }
    }

    /// <summary>What the model's handlers ran, shared by every host of a run.</summary>
    private sealed class ModelRecorder(TimeProvider clock)
    {
        private readonly Lock _gate = new();
        private readonly List<ModelInvocation> _invocations = [];
        private readonly Dictionary<Guid, int> _failures = [];
        public int Host { get; set; }

        public void Expect(Guid id, int failures)
        {
            lock (_gate)
            {
                _failures[id] = failures;
            }
        }

        public string? Run(Guid id, int attempt, int deliveryAttempt)
        {
            lock (_gate)
            {
                var fails = _failures.TryGetValue(id, out var failures) && attempt <= failures;
                var error = fails ? $"model failure of {id:N} at attempt {attempt.ToString(CultureInfo.InvariantCulture)}" : null;
                _invocations.Add(new ModelInvocation(_invocations.Count, id, attempt, deliveryAttempt, clock.GetUtcNow(), Host, error));
                return error;
            }
        }

        public List<ModelInvocation> Invocations()
        {
            lock (_gate)
            {
                return [.. _invocations];
            }
        }
    }

    private sealed class PipelineModelRun(TransportConformance suite, int seed) : IAsyncDisposable
    {
        private static readonly TimeSpan RetryMinDelay = TimeSpan.FromMilliseconds(20);
        private static readonly TimeSpan RetryMaxDelay = TimeSpan.FromMilliseconds(60);

        private readonly Random _random = new(seed);
        private readonly string _queue = NewName("model");
        private readonly List<ModelMessageSpec> _messages = [];
        private readonly List<string> _log = [];
        private readonly List<string> _failures = [];
        private readonly InMemoryDeadLetterStore _deadLetters = new();
        private readonly TestOutputLogger _hostLog = new();
        private readonly CancellationTokenSource _pump = new();
        private ModelRecorder _recorder = null!;
        private IInbox _inbox = null!;
        private Task _pumping = Task.CompletedTask;
        private IHost? _host;
        private int _restarts;

        // Messages sent after the last stop that its host's last receive may still take (PipelineModelLateReceiveAfterStop).
        private int _lateReceiveLeft;

        private ITransport Transport => suite.Transport;

        private TimeProvider Clock => suite.Clock;

        public async Task RunAsync()
        {
            _recorder = new ModelRecorder(Clock);
            _inbox = new InMemoryInbox(Clock);
            if (suite.FakeClock is { } fake)
            {
                // Retry delays, delayed sends and redeliveries wait on the transport's fake clock: it moves on by itself here,
                // in small steps, so no timer it holds fires before its time on that clock.
                _pumping = Task.Run(async () =>
                {
                    while (!_pump.IsCancellationRequested)
                    {
                        fake.Advance(TimeSpan.FromMilliseconds(5));
                        await Task.Delay(2).ConfigureAwait(false);
                    }
                });
            }

            Plan();
            var restartsAt = Enumerable.Range(0, 1 + _random.Next(2)).Select(_ => _random.Next(5, _messages.Count + 1)).ToHashSet();
            await StartHostAsync();
            for (var i = 0; i < _messages.Count; i++)
            {
                if (restartsAt.Contains(i))
                {
                    await RestartAsync($"before #{i}");
                }

                await SendAsync(_messages[i]);
            }

            if (restartsAt.Contains(_messages.Count))
            {
                await RestartAsync("after the last send");
            }

            await WaitForEveryFateAsync();
            await _host!.StopAsync();
            Log("host stopped at the end");
            var deadLetters = await _deadLetters.ListAsync(new DeadLetterQuery { Endpoint = _queue, Limit = DeadLetterQuery.MaxLimit });
            Check(deadLetters, _recorder.Invocations());
            await AssertQueueEmptyAsync();
            suite.Output.WriteLine($"seed {seed}: {_messages.Count} messages ({string.Join(", ", _messages.GroupBy(m => m.Fate).Select(g => $"{g.Count()} {g.Key}"))}), "
                + $"{_messages.Count(m => m.Delay is not null)} delayed, {_restarts} restart(s) met by {_messages.Count(m => m.RestartsMet > 0)} unsettled messages, {_recorder.Invocations().Count} handler runs.");
        }

        public async ValueTask DisposeAsync()
        {
            await _pump.CancelAsync();
            await _pumping;
            _pump.Dispose();
            if (_host is { } host)
            {
                await host.StopAsync();
                host.Dispose();
            }
        }

        private void Plan()
        {
            if (suite.PipelineModelLosesFirstFailure is { } why)
            {
                suite.Output.WriteLine($"The '{Transport.Name}' transport keeps no first-failure time across redeliveries, so the model checks it only loosely: {why}");
            }

            // Whole seconds suit every engine's delay (SQS rounds a delay up to one).
            var delay = suite.TestDelay < TimeSpan.FromSeconds(1) ? suite.TestDelay : TimeSpan.FromSeconds(1);
            var keyPrefix = "model-key-" + Guid.NewGuid().ToString("N")[..6] + "-";
            for (var seq = 0; seq < suite.PipelineModelMessages; seq++)
            {
                var (fate, failures) = _random.Next(10) switch
                {
                    < 4 => (ModelFate.Succeeds, 0),
                    < 7 => (ModelFate.FailsThenSucceeds, 1 + _random.Next(ModelMaxAttempts - 1)),
                    < 9 => (ModelFate.AlwaysFails, AlwaysFails),
                    _ => (ModelFate.Undecodable, 0),
                };
                var key = _random.Next(3) == 0 ? keyPrefix + _random.Next(3).ToString(CultureInfo.InvariantCulture) : null;
                TimeSpan? due = _random.Next(6) == 0 ? delay : null;
                var message = new ModelMessageSpec(seq, Guid.CreateVersion7(), fate, failures, key, due);
                _recorder.Expect(message.Id, failures);
                _messages.Add(message);
            }
        }

        private async Task SendAsync(ModelMessageSpec message)
        {
            var envelope = NewEnvelope(message.Seq, message.Key, ModelType) with { MessageId = message.Id };
            if (message.Fate == ModelFate.Undecodable)
            {
                envelope = envelope with { Body = "{\"seq\": not json"u8.ToArray() };
            }

            message.SentAt = Clock.GetUtcNow();
            if (_lateReceiveLeft > 0 && message.Delay is null)
            {
                // The stopped host's last receive may take it, and hand it back with a delivery counted.
                _lateReceiveLeft--;
                message.RestartsMet++;
            }

            await Transport.SendAsync(_queue, envelope, message.Delay is { } delay ? new SendOptions { Delay = delay } : null);
            Log($"sent {message}");
        }

        private async Task StartHostAsync()
        {
            _recorder.Host++;
            var builder = Host.CreateApplicationBuilder();
            builder.Logging.ClearProviders();
            builder.Logging.AddProvider(_hostLog);
            builder.Services.AddSingleton(_recorder);
            builder.Services.AddHerald(h => h
                .Configure(o =>
                {
                    o.EndpointName = _queue;
                    o.Prefetch = 8;
                    o.MaxConcurrency = 4;
                    o.ShutdownTimeout = TimeSpan.FromSeconds(5);
                })
                .AddMessageType<ModelWork>()
                .AddHandler<ModelWorkHandler>(ServiceLifetime.Singleton)
                .UseInbox()
                .ConfigureRetries(r => r.Immediate(ModelImmediateRetries).Delayed(ModelDelayedRetries, RetryMinDelay, RetryMaxDelay)));

            // Instances, not factories: the host does not dispose them, so the next host goes on with the same transport,
            // dead letters and inbox (the inbox's marks outlive a host as a database's would).
            builder.Services.Replace(ServiceDescriptor.Singleton(Transport));
            builder.Services.Replace(ServiceDescriptor.Singleton<IDeadLetterStore>(_deadLetters));
            builder.Services.Replace(ServiceDescriptor.Singleton(_inbox));
            builder.Services.Replace(ServiceDescriptor.Singleton(Clock));
            _host = builder.Build();
            await _host.StartAsync();
            Log($"host {_recorder.Host} started");
        }

        private async Task RestartAsync(string when)
        {
            var settled = await SettledAsync();
            foreach (var message in _messages.Where(m => m.SentAt != default && !settled.Contains(m.Id)))
            {
                message.RestartsMet++;
            }

            _restarts++;
            _lateReceiveLeft = suite.PipelineModelLateReceiveAfterStop;
            await _host!.StopAsync();
            _host.Dispose();
            _host = null;
            Log($"{when}: host {_recorder.Host} stopped");
            await StartHostAsync();
        }

        /// <summary>The messages handled (a run that did not throw) or dead-lettered so far.</summary>
        private async Task<HashSet<Guid>> SettledAsync()
        {
            var settled = _recorder.Invocations().Where(i => i.Error is null).Select(i => i.Id).ToHashSet();
            foreach (var deadLetter in await _deadLetters.ListAsync(new DeadLetterQuery { Endpoint = _queue, Limit = DeadLetterQuery.MaxLimit }))
            {
                settled.Add(deadLetter.Envelope.MessageId);
            }

            return settled;
        }

        private async Task WaitForEveryFateAsync()
        {
            var timeout = suite.DeliveryTimeout * 3;
            try
            {
                await Eventually.UntilAsync(
                    async () =>
                    {
                        var settled = await SettledAsync();
                        return _messages.All(m => settled.Contains(m.Id));
                    },
                    "every message is handled or dead-lettered",
                    timeout);
            }
            catch (TimeoutException ex)
            {
                var settled = await SettledAsync();
                Fail($"{ex.Message} Not settled: {string.Join(", ", _messages.Where(m => !settled.Contains(m.Id)))}", _recorder.Invocations());
            }
        }

        private void Check(IReadOnlyList<DeadLetter> deadLetters, List<ModelInvocation> invocations)
        {
            var runs = invocations.GroupBy(i => i.Id).ToDictionary(g => g.Key, g => g.ToList());
            var letters = deadLetters.GroupBy(d => d.Envelope.MessageId).ToDictionary(g => g.Key, g => g.ToList());
            var known = _messages.Select(m => m.Id).ToHashSet();
            var strangers = invocations.Select(i => i.Id).Concat(letters.Keys).Where(id => !known.Contains(id)).Distinct().ToList();
            Expect(strangers.Count == 0, $"the handler ran or the store holds messages the run never sent: {string.Join(", ", strangers)}");

            foreach (var message in _messages)
            {
                var own = runs.GetValueOrDefault(message.Id) ?? [];
                var dead = letters.GetValueOrDefault(message.Id) ?? [];
                var successes = own.Count(i => i.Error is null);
                var restarted = message.RestartsMet;
                var what = message.ToString();

                // Attempts only grow; a restart may hand a delivery back uncounted (the same attempt again) or counted.
                for (var i = 1; i < own.Count; i++)
                {
                    Expect(restarted > 0 ? own[i].Attempt >= own[i - 1].Attempt : own[i].Attempt == own[i - 1].Attempt + 1,
                        $"{what}: run {i + 1} at attempt {own[i].Attempt} after attempt {own[i - 1].Attempt}");
                }

                Expect(own.Count <= ModelMaxAttempts + restarted, $"{what}: ran {own.Count} times, more than MaxAttempts {ModelMaxAttempts} and the {restarted} restart(s) it met");
                Expect(own.All(i => i.Attempt <= ModelMaxAttempts + restarted), $"{what}: ran at attempt {own.Select(i => i.Attempt).DefaultIfEmpty().Max()}, beyond MaxAttempts {ModelMaxAttempts} and the {restarted} restart(s) it met");
                Expect(own.Count == 0 || own[0].Attempt == 1 || restarted > 0, $"{what}: first ran at attempt {own.FirstOrDefault()?.Attempt}");
                if (message.Delay is { } delay && own.Count > 0)
                {
                    var waited = own[0].At - message.SentAt;
                    var allowed = suite.FakeClock is null ? delay - RealClockTolerance : delay;
                    Expect(waited >= allowed, $"{what}: first ran {waited.TotalMilliseconds:0} ms after it was sent, before its delay");
                }

                switch (message.Fate)
                {
                    case ModelFate.Succeeds or ModelFate.FailsThenSucceeds:
                        Expect(successes == 1, $"{what}: handled {successes} times, not once");
                        Expect(dead.Count == 0, $"{what}: handled and dead-lettered");
                        Expect(own.Count == 0 || own[^1].Error is null, $"{what}: ran again after it was handled");
                        if (restarted == 0)
                        {
                            Expect(own.Count == message.Failures + 1, $"{what}: ran {own.Count} times, not {message.Failures + 1}");
                        }

                        break;
                    case ModelFate.AlwaysFails:
                        Expect(successes == 0, $"{what}: handled {successes} times");
                        if (!Expect(dead.Count == 1, $"{what}: dead-lettered {dead.Count} times, not once") || own.Count == 0)
                        {
                            break;
                        }

                        var letter = dead[0];
                        Expect(letter.Cause == DeadLetterCause.RetriesExhausted, $"{what}: dead-lettered as {letter.Cause}");
                        if (restarted == 0)
                        {
                            Expect(own.Count == ModelMaxAttempts, $"{what}: ran {own.Count} times, not MaxAttempts {ModelMaxAttempts}");
                            Expect(letter.AttemptCount == ModelMaxAttempts, $"{what}: dead letter counts {letter.AttemptCount} attempts, not {ModelMaxAttempts}");
                            Expect(letter.ErrorMessage == own[^1].Error, $"{what}: dead letter says '{letter.ErrorMessage}', the last run threw '{own[^1].Error}'");
                            var firstFailureBy = suite.PipelineModelLosesFirstFailure is null && own.Count > 1 ? own[1].At : letter.LastFailureTime;
                            Expect(letter.FirstFailureTime >= own[0].At && letter.FirstFailureTime <= firstFailureBy,
                                $"{what}: first failure at {Time(letter.FirstFailureTime)}, not between its first run at {Time(own[0].At)} and {Time(firstFailureBy)}");
                        }
                        else
                        {
                            // A restart can run it once more after the store took it (its ack lost): the store keeps the first.
                            Expect(letter.AttemptCount >= ModelMaxAttempts, $"{what}: dead letter counts {letter.AttemptCount} attempts, fewer than {ModelMaxAttempts}");
                            Expect(own.Any(i => i.Attempt == letter.AttemptCount && i.Error == letter.ErrorMessage),
                                $"{what}: dead letter says '{letter.ErrorMessage}' at attempt {letter.AttemptCount}, which no run threw");
                            Expect(letter.FirstFailureTime >= own[0].At, $"{what}: first failure at {Time(letter.FirstFailureTime)}, before its first run at {Time(own[0].At)}");
                        }

                        break;
                    case ModelFate.Undecodable:
                        Expect(own.Count == 0, $"{what}: an undecodable message reached the handler {own.Count} times");
                        if (Expect(dead.Count == 1, $"{what}: dead-lettered {dead.Count} times, not once"))
                        {
                            Expect(dead[0].Cause == DeadLetterCause.Undecodable && !string.IsNullOrWhiteSpace(dead[0].ErrorMessage),
                                $"{what}: dead-lettered as {dead[0].Cause} with the reason '{dead[0].ErrorMessage}'");
                        }

                        break;
                }
            }

            if (_failures.Count > 0)
            {
                Fail(string.Join(Environment.NewLine, _failures), invocations);
            }
        }

        /// <summary>With the host stopped, a plain consumer of the queue gets the two markers and nothing of the run.</summary>
        private async Task AssertQueueEmptyAsync()
        {
            var collector = suite.NewCollector();
            await using (var consumer = await StartConsumerAsync(Transport, _queue, collector))
            {
                await suite.SendMarkersAndWaitAsync(Transport, _queue, collector);
                await collector.AssertNoMoreThanAsync(2, suite.QuietWindow, $"seed {seed}: the queue holds nothing of the run at the end");
            }

            var left = collector.Items.Where(d => d.Envelope.MessageType != MarkerType).ToList();
            if (left.Count > 0)
            {
                Fail($"the queue still held {string.Join(", ", left.Select(d => d.Envelope.MessageId.ToString()[^6..]))} at the end", _recorder.Invocations());
            }
        }

        private bool Expect(bool condition, string difference)
        {
            if (!condition)
            {
                _failures.Add(difference);
            }

            return condition;
        }

        private void Log(string line) => _log.Add($"{Time(Clock.GetUtcNow())} {line}");

        private static string Time(DateTimeOffset at) => at.ToString("HH:mm:ss.ffffff", CultureInfo.InvariantCulture);

        private void Fail(string difference, List<ModelInvocation> invocations)
        {
            var text = new StringBuilder().Append(CultureInfo.InvariantCulture, $"seed {seed} on '{Transport.Name}': {difference}").AppendLine();
            text.AppendLine("operations:");
            foreach (var line in _log)
            {
                text.AppendLine(line);
            }

            text.AppendLine("handler runs:");
            foreach (var i in invocations)
            {
                var message = _messages.Find(m => m.Id == i.Id);
                text.AppendLine(CultureInfo.InvariantCulture, $"{Time(i.At)} host {i.Host} #{message?.Seq} {i.Id.ToString()[^6..]} attempt {i.Attempt} (delivery {i.DeliveryAttempt}) {(i.Error is null ? "ok" : "threw")}");
            }

            _hostLog.WriteTo(suite.Output);
            Assert.Fail(text.ToString());
        }
    }
}
