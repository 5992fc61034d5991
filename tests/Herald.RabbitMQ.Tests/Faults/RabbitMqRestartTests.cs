using System.Collections.Concurrent;
using System.Diagnostics;
using System.Text.Json;
using Herald.Conformance;
using Herald.Conformance.Faults;
using Herald.Handling;
using Herald.Messages;
using Herald.Processes.Servers;
using Herald.Reliability.DeadLetters;
using Herald.Transport;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Xunit.Abstractions;

namespace Herald.RabbitMQ.Tests.Faults;

/// <summary>
/// Issue 10, faults under load: a private RabbitMQ node is stopped and started again while producers publish with
/// confirms and a host consumes (inbox and dead letters in SQLite, which the restart does not touch). A send the broker
/// did not confirm is sent again with the same message id. Afterwards every confirmed message is handled exactly once
/// (an effect recorded when its unit of work commits) and nothing is dead-lettered.
/// </summary>
public sealed class RabbitMqRestartTests(ITestOutputHelper output) : IAsyncLifetime
{
    private const int Messages = 1200;
    private const int Producers = 4;
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(60);

    private readonly FaultScene _scene = new(output);
    private readonly string _endpoint = "rmqfault-" + Guid.NewGuid().ToString("N")[..8];
    private RabbitMqServer? _server;

    public async Task InitializeAsync() => _scene.Server = _server = await RabbitMqServer.StartAsync();

    public Task DisposeAsync() => _scene.DisposeAsync().AsTask();

    [Fact]
    public async Task BrokerStoppedAndStarted_WhilePublishingWithConfirmsAndConsuming_LosesNothing_AndCompletesNothingTwice_Issue10()
    {
        var clock = Stopwatch.StartNew();
        var probe = new Probe(Messages / 4);
        var host = await StartHostAsync(probe);
        var transport = host.Services.GetRequiredService<ITransport>();
        var restarting = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var resent = 0;

        // Half of the messages before the restart, half during and after it.
        var confirmed = new ConcurrentBag<Guid>();
        var producers = Enumerable.Range(0, Producers).Select(p => Task.Run(async () =>
        {
            for (var i = p; i < Messages; i += Producers)
            {
                if (i >= Messages / 2)
                {
                    await restarting.Task;
                }

                var envelope = new Envelope
                {
                    MessageId = Guid.CreateVersion7(),
                    MessageType = "rmqfault-work",
                    Time = DateTimeOffset.UtcNow,
                    Body = JsonSerializer.SerializeToUtf8Bytes(new Work(i), JsonSerializerOptions.Web),
                };
                var until = clock.Elapsed + Deadline;
                while (true)
                {
                    try
                    {
                        await transport.SendAsync(_endpoint, envelope);
                        confirmed.Add(envelope.MessageId);
                        break;
                    }
                    catch (Exception ex) when (ex is not OperationCanceledException && clock.Elapsed < until)
                    {
                        // Not confirmed: it may or may not be stored, so send it again (the inbox drops a duplicate).
                        Interlocked.Increment(ref resent);
                        await Task.Delay(50);
                    }
                }
            }
        })).ToList();

        // Stop the node once the consumer is busy; the second half of the sends meets the stopped node.
        await probe.Busy.Task.WaitAsync(Deadline);
        output.WriteLine($"{clock.Elapsed}: stopping RabbitMQ with {probe.Handled.Count} messages handled");
        await _server!.StopAsync();
        Assert.True(probe.Handled.Count < Messages / 2, "the node stopped with deliveries of the first half in flight or queued");
        probe.Gate.SetResult();
        restarting.SetResult();
        await Eventually.UntilAsync(() => Volatile.Read(ref resent) >= Producers, "every producer is refused by the stopped node", Deadline);
        output.WriteLine($"{clock.Elapsed}: stopped with {probe.Handled.Count} messages handled; starting it again");
        await _server.StartAgainAsync();
        output.WriteLine($"{clock.Elapsed}: RabbitMQ is back");

        await Task.WhenAll(producers).WaitAsync(Deadline);
        Assert.Equal(Messages, confirmed.Count);
        await Eventually.UntilAsync(() => confirmed.All(probe.Handled.ContainsKey), "every confirmed message is handled", Deadline);
        output.WriteLine($"{clock.Elapsed}: drained; {resent} sends repeated");

        Assert.All(probe.Handled, pair => Assert.True(pair.Value == 1, $"message {pair.Key} completed {pair.Value} times"));
        Assert.Equal(confirmed.Order(), probe.Handled.Keys.Order());
        Assert.Equal(0L, await host.Services.GetRequiredService<IDeadLetterStore>().CountAsync(DeadLetterQuery.All));
    }

    private Task<IHost> StartHostAsync(Probe probe)
    {
        return _scene.StartHostAsync(services => services.AddSingleton(probe).AddHerald(h => h
            .Configure(o =>
            {
                o.EndpointName = _endpoint;
                o.MaxConcurrency = 4;
            })
            .UseSqlite(Path.Combine(_scene.Folder, "herald.db"))
            .UseRabbitMq(o =>
            {
                o.ConnectionUri = _server!.AmqpUri;
                o.ClientProvidedName = _endpoint;
                o.NetworkRecoveryInterval = TimeSpan.FromMilliseconds(250);
            })
            .UseInbox()
            .AddMessageType<Work>()
            .AddHandler<WorkHandler>(ServiceLifetime.Singleton)
            .ConfigureRetries(r => r.Immediate(1).Delayed(10, TimeSpan.FromMilliseconds(100), TimeSpan.FromSeconds(1)))));
    }

    [MessageType("rmqfault-work")]
    public sealed record Work(int N);

    /// <summary>Counts the committed completions of each message and says when the consumer is busy.</summary>
    public sealed class Probe(int busyAt)
    {
        public ConcurrentDictionary<Guid, int> Handled { get; } = new();

        public TaskCompletionSource Busy { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        /// <summary>Opened once the node is stopped: until then the handlers that start after <see cref="Busy"/> wait, so deliveries are in flight when it stops.</summary>
        public TaskCompletionSource Gate { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public void Completed(Guid messageId)
        {
            Handled.AddOrUpdate(messageId, 1, (_, n) => n + 1);
            if (Handled.Count >= busyAt)
            {
                Busy.TrySetResult();
            }
        }
    }

    /// <summary>Its effect counts only when its unit of work (with the inbox mark) commits.</summary>
    public sealed class WorkHandler(Probe probe) : IMessageHandler<Work>
    {
        public async ValueTask HandleAsync(Work message, MessageContext context, CancellationToken cancellationToken)
        {
            var id = context.Envelope.MessageId;
            context.UnitOfWork.OnCommitted(_ =>
            {
                probe.Completed(id);
                return ValueTask.CompletedTask;
            });
            if (probe.Busy.Task.IsCompleted)
            {
                // Held until the node is down: these commit, but their acks meet a closed channel, so the broker delivers
                // them again after the restart and the inbox must drop those copies.
                await probe.Gate.Task.WaitAsync(cancellationToken);
            }
        }
    }
}
