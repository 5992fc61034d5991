using System.Text;
using Herald.Handling;
using Herald.Messages;
using Herald.Reliability.DeadLetters;
using Herald.Sagas;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Xunit;

namespace Herald.Conformance.Sagas;

public abstract partial class SagaStateMachineConformance
{
    /// <summary>Steps each seed of the model test runs; lower it for a slow engine.</summary>
    protected virtual int ModelSteps => 150;

    /// <summary>The seeds of the model test: fixed, so a failure names one that reproduces it.</summary>
    public static TheoryData<int> ModelSeeds => [1, 2, 3, 4];

    /// <summary>
    /// Feeds the machine a seeded stream of events for a few orders (new ones, duplicates of delivered ones with their
    /// message id, events for unknown and finished instances, events out of order), moves the clock so timeouts fire
    /// (current, replaced and finished ones), and restarts the host on the same store; after every step each instance's
    /// state, status, version, data and timeouts, the commands it sent and the dead letters match the reference model.
    /// </summary>
    [Theory]
    [MemberData(nameof(ModelSeeds))]
    public async Task Model_RandomEvents_MatchTheReferenceModel(int seed)
    {
        var store = NewStore();
        await using var broker = new Broker();
        var run = new ModelRun(seed, broker, () => StartHostAsync(store, broker, concurrency: 1));
        try
        {
            await run.StartAsync();
            for (var step = 0; step < ModelSteps; step++)
            {
                await run.StepAsync(step);
            }

            run.AssertCoverage();
        }
        catch (Exception ex) when (ex is not ModelMismatchException)
        {
            throw new ModelMismatchException(run.Describe(ex.Message), ex);
        }
        finally
        {
            await run.DisposeAsync();
        }
    }

    /// <summary>A model test failure, with the seed and the operations that led to it.</summary>
    private sealed class ModelMismatchException(string message, Exception? inner = null) : Exception(message, inner);

    private sealed class ModelInstance
    {
        public string State { get; set; } = "";

        public bool Finished { get; set; }

        public long Version { get; set; }

        public int Total { get; set; }

        public List<int> Lines { get; } = [];

        public int Attempts { get; set; }

        /// <summary>The timeouts held, by name: the id is null until its message is seen leaving.</summary>
        public Dictionary<string, (Guid? Id, DateTimeOffset DueAt)> Timeouts { get; } = new(StringComparer.Ordinal);
    }

    /// <summary>A timeout's message on its way: due at <c>DueAt</c>, delivered once the clock reaches it.</summary>
    private sealed record InFlight(string Destination, Envelope Envelope, string OrderId, Guid TimeoutId, DateTimeOffset DueAt);

    /// <summary>One seeded run: the random events, the reference model and the checks.</summary>
    private sealed class ModelRun(int seed, Broker broker, Func<Task<IHost>> start) : IAsyncDisposable
    {
        private readonly Random _random = new(seed);
        private readonly string[] _ids = [.. Enumerable.Range(0, 10).Select(i => $"o{seed}-{i}")];
        private readonly Dictionary<string, ModelInstance> _model = new(StringComparer.Ordinal);
        private readonly Dictionary<string, List<string>> _commands = new(StringComparer.Ordinal);
        private readonly HashSet<Guid> _handled = [];
        private readonly HashSet<Guid> _deadLetters = [];
        private readonly List<(string Destination, Envelope Envelope)> _delivered = [];
        private readonly List<InFlight> _inFlight = [];
        private readonly HashSet<Guid> _knownSends = [];
        private readonly List<string> _log = [];
        private readonly Dictionary<string, int> _seen = new(StringComparer.Ordinal);
        private IHost? _host;
        private int _deliveries;
        private int _lines;
        private int _ghosts;

        private ISagaStore Sagas => _host!.Services.GetRequiredService<ISagaStore>();

        public async Task StartAsync() => _host = await start();

        public string Describe(string failure) =>
            $"seed {seed}, clock {broker.Clock.GetUtcNow():O}: {failure}{Environment.NewLine}operations:{Environment.NewLine}  {string.Join(Environment.NewLine + "  ", _log)}";

        public async Task StepAsync(int step)
        {
            var roll = _random.Next(100);
            if (roll < 16)
            {
                await SendAsync(step, new OrderPlaced(Pick(_ids), _random.Next(1, 100)));
            }
            else if (roll < 34)
            {
                await SendAsync(step, new LineAdded(Target(), ++_lines));
            }
            else if (roll < 48)
            {
                await SendAsync(step, new StockReserved(Target()));
            }
            else if (roll < 58)
            {
                await SendAsync(step, new PaymentTaken(Target()));
            }
            else if (roll < 61)
            {
                var ghost = $"ghost{seed}-{++_ghosts}";
                await SendAsync(step, _random.Next(3) switch { 0 => new LineAdded(ghost, ++_lines), 1 => new StockReserved(ghost), _ => (object)new PaymentTaken(ghost) });
            }
            else if (roll < 74 && _delivered.Count > 0)
            {
                await DuplicateAsync(step, _delivered[_random.Next(_delivered.Count)]);
            }
            else if (roll < 94)
            {
                await AdvanceAsync(step, TimeSpan.FromMinutes(Pick([1, 3, 5, 11])));
            }
            else
            {
                await RestartAsync(step);
            }
        }

        public void AssertCoverage()
        {
            string[] kinds = ["created", "transition", "ignored", "no instance", "dead letter", "duplicate", "finished", "timeout fired", "timeout stale", "timeout unhandled", "restart"];
            var missing = kinds.Where(k => _seen.GetValueOrDefault(k) == 0).ToArray();
            if (missing.Length > 0)
            {
                throw new ModelMismatchException(Describe($"the run never met {string.Join(", ", missing)} (met {string.Join(", ", _seen.Select(p => $"{p.Key} {p.Value}"))})"));
            }
        }

        public async ValueTask DisposeAsync()
        {
            if (_host is { } host)
            {
                await host.StopAsync();
                host.Dispose();
            }
        }

        private T Pick<T>(IReadOnlyList<T> items) => items[_random.Next(items.Count)];

        // Mostly a running instance (in whatever state: events arrive out of order), else any order, begun or finished or not.
        private string Target()
        {
            var running = _ids.Where(id => _model.GetValueOrDefault(id) is { Finished: false }).ToList();
            return running.Count > 0 && _random.Next(4) > 0 ? Pick(running) : Pick(_ids);
        }

        private void Saw(string kind) => _seen[kind] = _seen.GetValueOrDefault(kind) + 1;

        private async Task SendAsync(int step, object message)
        {
            var before = broker.Transport.Sent.Count;
            await _host!.Services.GetRequiredService<IMessageBus>().SendAsync(message);

            // The transport records a send once the in-memory queue took it, so what its handler sent may be recorded first.
            var type = _host.Services.GetRequiredService<MessageTypeRegistry>().GetName(message.GetType());
            var sends = broker.Transport.Sent.Skip(before).Where(s => s.Envelope.MessageType == type).ToList();
            Assert.True(sends.Count == 1, $"step {step}: sending {message} left {sends.Count} message(s) of its type: {string.Join("; ", sends.Select(s => $"{s.Envelope.MessageId} to {s.Destination}"))}");
            var (destination, envelope) = sends[0];
            _log.Add($"{step}: {message} as {envelope.MessageId}");
            _delivered.Add((destination, envelope));
            _knownSends.Add(envelope.MessageId);
            Deliver(envelope.MessageId, message, timeoutId: null);
            await CheckAsync(step);
        }

        private async Task DuplicateAsync(int step, (string Destination, Envelope Envelope) delivered)
        {
            _log.Add($"{step}: {delivered.Envelope.MessageType} {delivered.Envelope.MessageId} again");
            Saw("duplicate");
            await broker.Transport.SendAsync(delivered.Destination, delivered.Envelope);
            var timeoutId = delivered.Envelope.GetHeader(HeaderNames.SagaTimeoutId) is { } header ? Guid.Parse(header) : (Guid?)null;
            Deliver(delivered.Envelope.MessageId, Message(delivered.Envelope), timeoutId);
            await CheckAsync(step);
        }

        // The clock is moved only once every timeout the model expects has left (CheckAsync waits for them), so each is due
        // where the model says.
        private async Task AdvanceAsync(int step, TimeSpan by)
        {
            broker.Clock.Advance(by);
            var now = broker.Clock.GetUtcNow();
            var due = _inFlight.Where(t => t.DueAt <= now).OrderBy(t => t.DueAt).ToList();
            _log.Add($"{step}: clock +{by.TotalMinutes} min, {due.Count} timeout(s) due");
            foreach (var timeout in due)
            {
                _inFlight.Remove(timeout);
                _delivered.Add((timeout.Destination, timeout.Envelope));
                Deliver(timeout.Envelope.MessageId, Message(timeout.Envelope), timeout.TimeoutId);
            }

            await CheckAsync(step);
        }

        private async Task RestartAsync(int step)
        {
            _log.Add($"{step}: restart");
            Saw("restart");
            await _host!.StopAsync();
            _host.Dispose();
            _host = await start();
            await CheckAsync(step);
        }

        private static object Message(Envelope envelope)
        {
            var body = Body(envelope);
            var id = body.GetProperty("orderId").GetString()!;
            return envelope.MessageType switch
            {
                "smc-order-placed" => new OrderPlaced(id, body.GetProperty("total").GetInt32()),
                "smc-line-added" => new LineAdded(id, body.GetProperty("line").GetInt32()),
                "smc-stock-reserved" => new StockReserved(id),
                "smc-payment-taken" => new PaymentTaken(id),
                "smc-reservation-timed-out" => new ReservationTimedOut(id),
                "smc-payment-timed-out" => new PaymentTimedOut(id),
                _ => throw new InvalidOperationException($"not an event of the machine: {envelope.MessageType}"),
            };
        }

        // The reference model of one delivery: the inbox drops a message handled already (a dead-lettered one was not handled:
        // its unit of work rolled back, so it runs again), and a message dead-lettered again is kept once (its dead letter's id
        // derives from the endpoint and the message id); the rest follows docs/sagas.md.
        private void Deliver(Guid messageId, object message, Guid? timeoutId)
        {
            _deliveries++;
            if (_handled.Contains(messageId))
            {
                _log.Add("   model: duplicate, dropped by the inbox");
                return;
            }

            var outcome = Apply(message, timeoutId);
            _log.Add($"   model: {outcome}");
            Saw(outcome.Split(':')[0]);
            if (outcome.StartsWith("dead letter", StringComparison.Ordinal))
            {
                _deadLetters.Add(messageId);
            }
            else
            {
                _handled.Add(messageId);
            }
        }

        private string Apply(object message, Guid? timeoutId)
        {
            var id = message switch
            {
                OrderPlaced m => m.OrderId,
                LineAdded m => m.OrderId,
                StockReserved m => m.OrderId,
                PaymentTaken m => m.OrderId,
                ReservationTimedOut m => m.OrderId,
                PaymentTimedOut m => m.OrderId,
                _ => throw new InvalidOperationException(message.ToString()),
            };
            var instance = _model.GetValueOrDefault(id);
            if (timeoutId is { } fired)
            {
                if (instance is null || instance.Finished || !instance.Timeouts.Values.Any(t => t.Id == fired))
                {
                    return "timeout stale: cancelled, replaced or finished";
                }

                var name = instance.Timeouts.Single(t => t.Value.Id == fired).Key;
                var handled = (instance.State, message) is ("Reserving", ReservationTimedOut) or ("Charging", PaymentTimedOut);
                instance.Timeouts.Remove(name);
                if (!handled)
                {
                    instance.Version++;
                    return $"timeout unhandled: {name} in {instance.State}, dropped";
                }

                Saw("timeout fired");
            }

            if (instance is null)
            {
                switch (message)
                {
                    case OrderPlaced placed:
                        instance = _model[id] = new ModelInstance { State = "Reserving", Version = 1, Total = placed.Total };
                        Command(id, $"ReserveStock {placed.Total}");
                        Schedule(instance, "reserve", ReserveWindow);
                        return $"created: {id}";
                    case StockReserved:
                        return $"dead letter: no instance {id}";
                    default:
                        return $"no instance: {id}";
                }
            }

            if (instance.Finished)
            {
                return $"finished: {id} is {instance.State}";
            }

            var before = instance.State;
            switch (instance.State, message)
            {
                case ("Reserving", LineAdded line):
                    instance.Lines.Add(line.Line);
                    Schedule(instance, "reserve", ReserveWindow);
                    break;
                case ("Reserving", StockReserved):
                    instance.State = "Charging";
                    instance.Attempts = 1;
                    Command(id, $"ChargePayment {instance.Total} 1");
                    Schedule(instance, "payment", PaymentWindow);
                    break;
                case ("Reserving", ReservationTimedOut):
                    instance.State = "Cancelled";
                    Command(id, "ReleaseStock");
                    break;
                case ("Charging", PaymentTaken):
                    instance.State = "Completed";
                    Command(id, $"ShipOrder {instance.Lines.Count}");
                    break;
                case ("Charging", PaymentTimedOut):
                    instance.Attempts++;
                    Command(id, $"ChargePayment {instance.Total} {instance.Attempts}");
                    Schedule(instance, "payment", PaymentWindow);
                    break;
                default:
                    return $"ignored: {message.GetType().Name} in {instance.State}";
            }

            instance.Version++;
            if (instance.State is "Completed" or "Cancelled")
            {
                instance.Finished = true;
                instance.Timeouts.Clear();
            }

            return $"transition: {id} {before} -> {instance.State}";
        }

        private void Schedule(ModelInstance instance, string name, TimeSpan window) => instance.Timeouts[name] = (null, broker.Clock.GetUtcNow() + window);

        private void Command(string id, string command)
        {
            if (!_commands.TryGetValue(id, out var list))
            {
                _commands[id] = list = [];
            }

            list.Add(command);
        }

        // Waits until every delivery is settled and every send the model expects has left, then compares it all.
        private async Task CheckAsync(int step)
        {
            await Eventually.UntilAsync(() => broker.Transport.Settlements.Count >= _deliveries, $"step {step}: {_deliveries} deliveries are settled");
            var unbound = _model.Values.Sum(i => i.Timeouts.Values.Count(t => t.Id is null));
            var expectedCommands = _commands.Values.Sum(c => c.Count);
            await Eventually.UntilAsync(
                () => NewTimeouts().Count >= unbound && broker.Transport.Sent.Count(s => s.Destination == broker.Outside) >= expectedCommands,
                $"step {step}: {unbound} timeout(s) and {expectedCommands} command(s) leave");
            Bind(step, NewTimeouts());
            Assert.Equal(_deliveries, broker.Transport.Settlements.Count);

            foreach (var id in _ids.Concat(Enumerable.Range(1, _ghosts).Select(g => $"ghost{seed}-{g}")))
            {
                var stored = await Sagas.LoadAsync(SagaName, id);
                var expected = _model.GetValueOrDefault(id);
                if (expected is null)
                {
                    Assert.True(stored is null, $"step {step}: {id} exists ({stored?.State}) but the model has no instance");
                    continue;
                }

                Assert.True(stored is not null, $"step {step}: {id} is missing");
                var data = Read(stored);
                var what = $"step {step}: {id}";
                Assert.Equal((what, expected.State, expected.Finished ? SagaStatus.Completed : SagaStatus.Running, expected.Version), (what, stored.State!, stored.Status, stored.Version));
                Assert.Equal((what, expected.Total, string.Join(",", expected.Lines), expected.Attempts), (what, data.Total, string.Join(",", data.Lines), data.Attempts));
                Assert.Equal(
                    (what, string.Join("; ", expected.Timeouts.OrderBy(t => t.Key, StringComparer.Ordinal).Select(t => $"{t.Key} {t.Value.Id} {t.Value.DueAt:O}"))),
                    (what, string.Join("; ", stored.Timeouts.OrderBy(t => t.Name, StringComparer.Ordinal).Select(t => $"{t.Name} {t.Id} {t.DueAt:O}"))));
            }

            var sent = broker.Transport.Sent.Where(s => s.Destination == broker.Outside).Select(s => s.Envelope).ToList();
            foreach (var id in _ids)
            {
                Assert.Equal((step, id, string.Join(" | ", _commands.GetValueOrDefault(id) ?? [])), (step, id, string.Join(" | ", sent.Select(Describe).Where(c => c.Id == id).Select(c => c.Command))));
            }

            Assert.Equal(expectedCommands, sent.Count);
            var deadLetters = await _host!.Services.GetRequiredService<IDeadLetterStore>().ListAsync(new DeadLetterQuery { Endpoint = broker.Endpoint });
            Assert.Equal((step, string.Join(",", _deadLetters.Order())), (step, string.Join(",", deadLetters.Select(d => d.Envelope.MessageId).Order())));
            Assert.All(deadLetters, d => Assert.Contains("has no instance", d.ErrorMessage, StringComparison.Ordinal));
            Assert.All(deadLetters, d => Assert.Equal(DeadLetterCause.NotRetryable, d.Cause));
        }

        private List<(string Destination, Envelope Envelope)> NewTimeouts() =>
            [.. broker.Transport.Sent.Where(s => s.Envelope.MessageType.EndsWith("-timed-out", StringComparison.Ordinal) && !_knownSends.Contains(s.Envelope.MessageId))];

        // A timeout the model expects is bound to the message seen leaving for it: its instance and name, and the id it carries.
        private void Bind(int step, List<(string Destination, Envelope Envelope)> sends)
        {
            foreach (var (destination, envelope) in sends)
            {
                var id = Body(envelope).GetProperty("orderId").GetString()!;
                var name = envelope.MessageType == "smc-reservation-timed-out" ? "reserve" : "payment";
                var instance = _model.GetValueOrDefault(id);
                Assert.True(instance is not null && instance.Timeouts.TryGetValue(name, out var held) && held.Id is null,
                    $"step {step}: timeout '{name}' of {id} left, but the model holds {(instance is null ? "no instance" : string.Join(", ", instance.Timeouts.Keys))} unsent");
                var due = instance!.Timeouts[name].DueAt;
                var timeoutId = TimeoutId(envelope);
                instance.Timeouts[name] = (timeoutId, due);
                _knownSends.Add(envelope.MessageId);
                _inFlight.Add(new InFlight(destination, envelope, id, timeoutId, due));
                _log.Add($"   sent timeout {name} of {id} ({timeoutId}) due {due:HH:mm}");
            }
        }

        private static (string Id, string Command) Describe(Envelope envelope)
        {
            var body = Body(envelope);
            var id = body.GetProperty("orderId").GetString()!;
            return (id, envelope.MessageType switch
            {
                "smc-reserve-stock" => $"ReserveStock {body.GetProperty("total").GetInt32()}",
                "smc-charge-payment" => $"ChargePayment {body.GetProperty("total").GetInt32()} {body.GetProperty("attempt").GetInt32()}",
                "smc-ship-order" => $"ShipOrder {body.GetProperty("lines").GetInt32()}",
                "smc-release-stock" => "ReleaseStock",
                _ => envelope.MessageType + " " + Encoding.UTF8.GetString(envelope.Body.Span),
            });
        }
    }
}
