using System.Collections.Concurrent;
using System.Diagnostics;
using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;
using Herald.Conformance;
using Herald.Internal;
using Herald.Nats.Transport;
using Herald.Transport;
using Microsoft.Extensions.Logging;
using NATS.Client.Core;
using NATS.Client.JetStream;
using NATS.Client.JetStream.Models;
using Xunit.Abstractions;

namespace Herald.Nats.Tests;

/// <summary>
/// A seeded model of a queue's consumer liveness (docs/nats.md, Guarantees): a random interleaving of sends, handlers that
/// succeed, hold, fail once or fail always, consumers stopped and started on two hosts (two transports, two connections),
/// a process killed while it held a message (a fetch never settled), and an operator's actions made with NATS.Net directly:
/// the durable deleted, deleted and made again as a pull consumer with another MaxDeliver and ack wait, or as a push
/// consumer; the stream purged, deleted, or deleted and made again. Then, with a host consuming, it checks:
/// <list type="bullet">
/// <item>every message sent and not purged or deleted with its stream afterwards is handled at least once, or dead-lettered;</item>
/// <item>a dead letter's message failed (a handler threw, or a killed process held it) at least as many times as the deliveries its reason names, at least once;</item>
/// <item>no message is dead-lettered twice (the max-deliveries advisories, and the dead-letter copies, are acted on once);</item>
/// <item>after each operator action a running consumer handles a new message within <see cref="ResumeBound"/> (the failed
/// pull finds the durable gone at once; a made-again push consumer ends the consumer, reported in its completion, and it is
/// started again once the operator deleted it, as docs/nats.md says to);</item>
/// <item>no consumer ends on its own otherwise, and at the end nothing is pending or ack-pending on the durable.</item>
/// </list>
/// A failure prints the seed and the operation log.
/// </summary>
public sealed class LivenessModelTests(ITestOutputHelper output) : NatsTestBase
{
    // docs/nats.md: a consumer finds its durable gone at its next failed pull (the server answers a waiting pull "409
    // Consumer Deleted"), or at the first heartbeat its pull misses (about 5 s): a delete that finds no pull of its waiting
    // (its receive held by full lanes) is noticed that way, measured 6 to 6.4 s here. Plus a probe laned behind held handlers.
    private static readonly TimeSpan ResumeBound = TimeSpan.FromSeconds(10);
    private static readonly TimeSpan OperationsFor = TimeSpan.FromSeconds(12);
    private static readonly TimeSpan SettleBound = TimeSpan.FromSeconds(25);
    private const string Queue = "model";

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    [InlineData(4)]
    public Task ARandomInterleaving_OfSendsHandlersStopsAndOperatorActions_LosesNothing_DeadLettersOnlyFailures_AndResumes(int seed) =>
        RunAsync(seed, streamDeletes: false);

    /// <summary>
    /// As above, the operator also deleting the queue's stream (alone, or making it again): the pull that gets "409 Consumer
    /// Deleted" makes the stream again only a second later, once the server's delete is over (NATS 2.9.10 made a stream made
    /// again at once in the directory that delete then removed: it delivered nothing after).
    /// </summary>
    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    [InlineData(3)]
    public Task ARandomInterleaving_WithTheStreamDeleted_LosesNothing_AndResumes(int seed) =>
        RunAsync(seed, streamDeletes: true);

    private async Task RunAsync(int seed, bool streamDeletes)
    {
        var model = new Model(this, seed, streamDeletes);
        try
        {
            await model.RunAsync();
        }
        finally
        {
            output.WriteLine(model.Report());
        }
    }

    private sealed class Model(LivenessModelTests test, int seed, bool streamDeletes)
    {
        private readonly Random _random = new(seed);
        private readonly Stopwatch _clock = Stopwatch.StartNew();
        private readonly ConcurrentQueue<string> _log = new();
        private readonly List<string> _violations = [];

        // What the model sent (id -> kind), and what must be handled or dead-lettered: not purged or deleted with its stream since.
        private readonly Dictionary<Guid, string> _sent = [];
        private readonly HashSet<Guid> _owed = [];
        private readonly ConcurrentDictionary<Guid, int> _succeeded = new();
        private readonly ConcurrentDictionary<Guid, int> _failed = new();
        private readonly ConcurrentDictionary<Guid, int> _tries = new();
        private readonly Dictionary<Guid, List<string>> _deadLettered = [];
        private readonly NatsTransport?[] _hosts = new NatsTransport?[2];
        private readonly TestOutputLogger[] _logs = [new(), new()];
        private readonly ITransportConsumer?[] _consumers = new ITransportConsumer?[2];
        private NatsConnection? _operatorConnection;
        private NatsJSContext? _operator;
        private int _next;

        private string Stream => test.Names.QueueStream(Queue);

        private static string Durable => NatsNames.Durable(Queue);

        public async Task RunAsync()
        {
            (_operatorConnection, _operator) = await NatsServer.ConnectAsync();
            await using var _ = _operatorConnection;
            for (var h = 0; h < _hosts.Length; h++)
            {
                var loggers = LoggerFactory.Create(l => l.AddProvider(_logs[h]));
                _hosts[h] = await test.CreateTransportAsync(o =>
                {
                    o.AckWait = TimeSpan.FromSeconds(2);
                    o.MaxDeliver = 3;
                    o.LagRefreshInterval = TimeSpan.FromMilliseconds(500);
                    o.PublishRetryTimeout = TimeSpan.FromSeconds(1);
                },
                loggerFactory: loggers);
            }

            await StartAsync(0);
            while (_clock.Elapsed < OperationsFor && _violations.Count == 0)
            {
                await StepAsync();
            }

            if (_violations.Count == 0)
            {
                await SettleAsync();
            }

            for (var h = 0; h < _consumers.Length; h++)
            {
                await StopAsync(h);
            }

            Assert.True(_violations.Count == 0, $"seed {seed}: {string.Join("; ", _violations)}\n{Report()}");
        }

        public string Report() => $"seed {seed}, {_sent.Count} sent, {_owed.Count} owed, {_succeeded.Count} handled, {_deadLettered.Count} dead-lettered; operations:\n" + string.Join('\n', _log)
            + $"\nhost 0 logged:\n{_logs[0]}\nhost 1 logged:\n{_logs[1]}";

        private void Log(string what) => _log.Enqueue(string.Create(CultureInfo.InvariantCulture, $"{_clock.Elapsed.TotalMilliseconds,7:F0} ms  {what}"));

        private void Violated(string what)
        {
            Log("VIOLATION: " + what);
            _violations.Add(what);
        }

        private async Task StepAsync()
        {
            var roll = _random.Next(100);
            var host = _random.Next(_hosts.Length);
            switch (roll)
            {
                case < 30:
                    await SendAsync(host, 1 + _random.Next(3));
                    break;
                case < 38:
                    if (_consumers.Count(c => c is not null) > 1 || _random.Next(3) == 0)
                    {
                        await StopAsync(host);
                    }

                    break;
                case < 48:
                    await StartAsync(host);
                    break;
                case < 56:
                    await OperatorAsync("delete the durable", () => _operator!.DeleteConsumerAsync(Stream, Durable).AsTask());
                    break;
                case < 64:
                    var maxDeliver = (long)_random.Next(1, 5);
                    var ackWait = TimeSpan.FromSeconds(_random.Next(1, 4));
                    await OperatorAsync($"delete the durable, make it again as a pull consumer (MaxDeliver {maxDeliver}, AckWait {ackWait.TotalSeconds} s)", async () =>
                    {
                        await _operator!.DeleteConsumerAsync(Stream, Durable);
                        await _operator.CreateOrUpdateConsumerAsync(Stream, new ConsumerConfig(Durable)
                        {
                            AckPolicy = ConsumerConfigAckPolicy.Explicit,
                            MaxDeliver = maxDeliver,
                            AckWait = ackWait,
                            MaxWaiting = 512,
                        });
                    });
                    break;
                case < 68:
                    await PushAsync();
                    break;
                case < 73:
                    Forgive("purged");
                    await OperatorAsync("purge the stream", () => _operator!.PurgeStreamAsync(Stream, new StreamPurgeRequest()).AsTask());
                    break;
                case < 82 when !streamDeletes:
                    await PaceAsync(_random.Next(50, 400));
                    break;
                case < 78:
                    Forgive("deleted with the stream");
                    await OperatorAsync("delete the stream", () => _operator!.DeleteStreamAsync(Stream).AsTask());
                    break;
                case < 82:
                    Forgive("deleted with the stream");
                    await OperatorAsync("delete the stream and make it again", async () =>
                    {
                        await _operator!.DeleteStreamAsync(Stream);
                        await _operator.CreateStreamAsync(new StreamConfig(Stream, [test.Names.QueueSubject(Queue)])
                        {
                            Retention = StreamConfigRetention.Workqueue,
                            Storage = StreamConfigStorage.File,
                        });
                    });
                    break;
                case < 88:
                    await KillWhileHoldingAsync();
                    break;
                default:
                    // Lets what was started run on: the interleaving is the operations' order against the consumers' own work.
                    await PaceAsync(_random.Next(50, 400));
                    break;
            }

            CheckNoneEnded();
        }

        private async Task SendAsync(int host, int count)
        {
            for (var i = 0; i < count; i++)
            {
                var kind = _random.Next(100) switch
                {
                    < 50 => "ok",
                    < 70 => "hold" + _random.Next(100, 1000).ToString(CultureInfo.InvariantCulture),
                    < 85 => "fail1",
                    _ => "failall",
                };
                await SendOneAsync(host, kind);
            }
        }

        private async Task<Guid?> SendOneAsync(int host, string kind)
        {
            var n = ++_next;
            var envelope = NewEnvelope($"{kind}-{n}");
            try
            {
                await _hosts[host]!.SendAsync(Queue, envelope);
            }
            catch (Exception e) when (e is HeraldException or NatsException)
            {
                Log($"host {host}: send #{n} {kind} failed ({e.Message[..Math.Min(80, e.Message.Length)]}); not sent");
                return null;
            }

            _sent[envelope.MessageId] = kind;
            _owed.Add(envelope.MessageId);
            Log($"host {host}: sent #{n} {kind} {envelope.MessageId}");
            return envelope.MessageId;
        }

        private void Forgive(string why)
        {
            Log($"{_owed.Count} owed messages no longer owed: {why}");
            _owed.Clear();
        }

        private async Task StartAsync(int host)
        {
            if (_consumers[host] is not null)
            {
                return;
            }

            _consumers[host] = await _hosts[host]!.ConsumeAsync(Queue, new ConsumerOptions { MaxConcurrency = 2, Prefetch = 4 }, (delivery, cancellationToken) => HandleAsync(host, delivery, cancellationToken));
            Log($"host {host}: consumer started");
        }

        private async Task StopAsync(int host)
        {
            if (_consumers[host] is { } consumer)
            {
                _consumers[host] = null;

                // Graceful (the handlers finish), or aborting them at once (each handed back, not a failed attempt).
                var graceful = _random.Next(2) == 0;
                if (graceful)
                {
                    await consumer.StopAsync();
                }

                await consumer.DisposeAsync();
                Log($"host {host}: consumer stopped ({(graceful ? "handlers finished" : "handlers aborted")})");
            }
        }

        private async ValueTask HandleAsync(int host, Delivery delivery, CancellationToken cancellationToken)
        {
            var id = delivery.Envelope.MessageId;
            var text = TextOf(delivery.Envelope);
            var kind = text[..text.IndexOf('-', StringComparison.Ordinal)];
            var tries = _tries.AddOrUpdate(id, 1, (_, t) => t + 1);
            if (kind.StartsWith("hold", StringComparison.Ordinal))
            {
                try
                {
                    await Task.Delay(int.Parse(kind[4..], CultureInfo.InvariantCulture), cancellationToken);
                }
                catch (OperationCanceledException)
                {
                    Log($"host {host}: {text} aborted by the stop (attempt {delivery.Envelope.DeliveryAttempt})");
                    throw;
                }
            }
            else if (kind == "failall" || (kind == "fail1" && tries == 1))
            {
                _failed.AddOrUpdate(id, 1, (_, f) => f + 1);
                Log($"host {host}: {text} failed (attempt {delivery.Envelope.DeliveryAttempt}, last {delivery.IsLastDelivery})");
                throw new InvalidOperationException("the model's handler fails " + text);
            }

            _succeeded.AddOrUpdate(id, 1, (_, s) => s + 1);
            Log($"host {host}: {text} handled (attempt {delivery.Envelope.DeliveryAttempt})");
        }

        /// <summary>An operator's action, then (a consumer running) a new message handled within <see cref="ResumeBound"/>.</summary>
        private async Task OperatorAsync(string what, Func<Task> action)
        {
            try
            {
                await action();
                Log("operator: " + what);
            }
            catch (NatsJSApiException e)
            {
                // The consumers made the durable (or the stream) again between the delete and the operator's make: theirs stands.
                Log($"operator: {what}: refused, {e.Error.Code} {e.Error.Description} (a consumer made it again first)");
            }

            await ExpectResumedAsync(what);
        }

        private async Task ExpectResumedAsync(string after)
        {
            var host = Array.FindIndex(_consumers, c => c is not null);
            if (host < 0)
            {
                return;
            }

            var started = _clock.Elapsed;
            Guid? probe = null;
            var resumed = await WaitUntilAsync(
                async () =>
                {
                    // A send right after the stream was deleted may fail until a consumer or the send itself made it again.
                    probe ??= await SendOneAsync(host, "ok");
                    return probe is { } id && _succeeded.ContainsKey(id);
                },
                ResumeBound);
            if (!resumed)
            {
                Violated($"no consumer handled a message sent after '{after}' within {ResumeBound.TotalSeconds} s ({await ServerStateAsync()})");
                return;
            }

            Log(string.Create(CultureInfo.InvariantCulture, $"resumed after '{after}' in {(_clock.Elapsed - started).TotalMilliseconds:F0} ms"));
        }

        /// <summary>
        /// The durable made again as a push consumer: each running consumer's pull ends and its completion says so; the
        /// operator deletes it and the consumers are started again (docs/nats.md: "delete it, and Herald makes it again as
        /// a pull consumer when the endpoint starts").
        /// </summary>
        private async Task PushAsync()
        {
            try
            {
                await _operator!.DeleteConsumerAsync(Stream, Durable);
                await _operator.CreateOrUpdateConsumerAsync(Stream, new ConsumerConfig(Durable)
                {
                    DeliverSubject = test.Prefixes.Subjects + ".pushed",
                    AckPolicy = ConsumerConfigAckPolicy.Explicit,
                });
                Log("operator: delete the durable, make it again as a push consumer");
            }
            catch (NatsJSApiException e)
            {
                Log($"operator: make the durable again as a push consumer: refused, {e.Error.Code} {e.Error.Description} (a consumer made it again first)");
                await ExpectResumedAsync("delete the durable (its push make refused)");
                return;
            }

            for (var h = 0; h < _consumers.Length; h++)
            {
                if (_consumers[h] is not IConsumerCompletion { Completion: var completion })
                {
                    continue;
                }

                try
                {
                    await completion.WaitAsync(ResumeBound);
                    Violated($"host {h}: the consumer of a push durable ended without a fault");
                }
                catch (TimeoutException)
                {
                    Violated($"host {h}: the consumer of a push durable did not end within {ResumeBound.TotalSeconds} s");
                }
                catch (HeraldException e) when (e.Message.Contains("push", StringComparison.OrdinalIgnoreCase))
                {
                    Log($"host {h}: the consumer ended: push durable reported");
                }
                catch (Exception e)
                {
                    Violated($"host {h}: the consumer of a push durable ended with {e.GetType().Name}: {e.Message}");
                }
            }

            await _operator.DeleteConsumerAsync(Stream, Durable);
            Log("operator: delete the push durable; restart the ended consumers");
            for (var h = 0; h < _consumers.Length; h++)
            {
                if (_consumers[h] is not null)
                {
                    await StopAsync(h);
                    await StartAsync(h);
                }
            }

            await ExpectResumedAsync("the push durable deleted, the consumers started again");
        }

        /// <summary>A process that takes a message and is killed before it settles it: a failed attempt, back after the ack wait.</summary>
        private async Task KillWhileHoldingAsync()
        {
            try
            {
                var durable = await _operator!.GetConsumerAsync(Stream, Durable);
                await foreach (var message in durable.FetchAsync<byte[]>(new NatsJSFetchOpts { MaxMsgs = 1, Expires = TimeSpan.FromSeconds(1) }))
                {
                    if (message.Headers is { } headers && headers.TryGetValue("Nats-Msg-Id", out var msgId) && Guid.TryParse(msgId.ToString(), out var id))
                    {
                        _failed.AddOrUpdate(id, 1, (_, f) => f + 1);
                        Log($"killed process: took {id} (delivery {message.Metadata?.NumDelivered}), never settles it");
                    }
                }
            }
            catch (Exception e) when (e is NatsJSException or NatsException)
            {
                Log($"killed process: took nothing ({e.GetType().Name})");
            }
        }

        private void CheckNoneEnded()
        {
            for (var h = 0; h < _consumers.Length; h++)
            {
                if (_consumers[h] is IConsumerCompletion { Completion: { IsCompleted: true } completion })
                {
                    Violated($"host {h}: the consumer ended on its own: {completion.Exception?.InnerException?.Message ?? "no fault"}");
                    _consumers[h] = null;
                }
            }
        }

        /// <summary>A host consuming, everything owed is handled or dead-lettered; then nothing is pending or ack-pending.</summary>
        private async Task SettleAsync()
        {
            if (_consumers.All(c => c is null))
            {
                await StartAsync(_random.Next(_hosts.Length));
            }

            Log("settling");
            var settled = await WaitUntilAsync(
                async () =>
                {
                    await DrainAsync();
                    CheckNoneEnded();
                    return _violations.Count > 0 || _owed.All(id => _succeeded.ContainsKey(id) || _deadLettered.ContainsKey(id));
                },
                SettleBound);
            foreach (var id in _owed.Where(id => !_succeeded.ContainsKey(id) && !_deadLettered.ContainsKey(id)))
            {
                Violated($"{_sent[id]} {id} was neither handled nor dead-lettered (failed {_failed.GetValueOrDefault(id)} times)");
            }

            if (!settled || _violations.Count > 0)
            {
                return;
            }

            foreach (var (id, reasons) in _deadLettered)
            {
                if (reasons.Count > 1)
                {
                    Violated($"{id} was dead-lettered {reasons.Count} times: {string.Join(" | ", reasons)}");
                }

                var failed = _failed.GetValueOrDefault(id);
                var deliveries = Regex.Match(reasons[0], @"Delivered (\d+) times") is { Success: true } m ? int.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture) : 1;
                if (failed < Math.Max(1, deliveries))
                {
                    Violated($"{(_sent.TryGetValue(id, out var kind) ? kind : "unknown")} {id} was dead-lettered after {failed} failures: {reasons[0]}");
                }
            }

            INatsJSConsumer? durable = null;
            var drained = await WaitUntilAsync(
                async () =>
                {
                    await DrainAsync();
                    durable = await _operator!.GetConsumerAsync(Stream, Durable);
                    return durable.Info is { NumAckPending: 0, NumPending: 0 };
                },
                ResumeBound);
            if (!drained)
            {
                Violated($"the durable still has {durable?.Info.NumPending} pending, {durable?.Info.NumAckPending} ack-pending ({durable?.Info.NumRedelivered} redelivered) at the end");
            }
        }

        // What the server has: for a violation's message.
        private async Task<string> ServerStateAsync()
        {
            var state = new StringBuilder();
            try
            {
                var stream = await _operator!.GetStreamAsync(Stream);
                state.Append(CultureInfo.InvariantCulture, $"stream created {stream.Info.Created:HH:mm:ss.fff}, {stream.Info.State.Messages} messages, seq {stream.Info.State.FirstSeq}-{stream.Info.State.LastSeq}");
                var durable = await _operator.GetConsumerAsync(Stream, Durable);
                state.Append(CultureInfo.InvariantCulture, $"; durable created {durable.Info.Created:HH:mm:ss.fff}, push {durable.Info.Config.DeliverSubject is not null}, {durable.Info.NumPending} pending, {durable.Info.NumAckPending} ack-pending, {durable.Info.NumWaiting} waiting pulls, delivered {durable.Info.Delivered.StreamSeq}");
            }
            catch (NatsJSApiException e)
            {
                state.Append(CultureInfo.InvariantCulture, $"; {e.Error.Description}");
            }

            return state.ToString();
        }

        private async Task DrainAsync()
        {
            await _hosts[0]!.DrainDeadLettersAsync(Queue, (deadLetter, _) =>
            {
                var id = deadLetter.Envelope.MessageId;
                if (!_deadLettered.TryGetValue(id, out var reasons))
                {
                    _deadLettered[id] = reasons = [];
                }

                reasons.Add(deadLetter.Reason ?? "no reason");
                Log($"dead letter drained: {id}: {deadLetter.Reason}");
                return ValueTask.CompletedTask;
            });
        }

        private static async Task PaceAsync(int milliseconds) => await Task.Delay(milliseconds);

        // Polls until the condition holds or the bound passes; false then.
        private static async Task<bool> WaitUntilAsync(Func<Task<bool>> condition, TimeSpan bound)
        {
            try
            {
                await Herald.Conformance.Eventually.UntilAsync(
                    async () =>
                    {
                        try
                        {
                            return await condition();
                        }
                        catch (Exception e) when (e is NatsJSException or NatsException or HeraldException)
                        {
                            // The server's answer while the topology is being made again: asked again.
                            return false;
                        }
                    },
                    "the model's condition",
                    bound);
                return true;
            }
            catch (TimeoutException)
            {
                return false;
            }
        }
    }
}
