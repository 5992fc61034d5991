using System.Collections.Concurrent;
using Herald.Conformance;
using Herald.Conformance.Transport;
using Herald.Handling;
using Herald.Messages;
using Herald.Persistence;
using Herald.Reliability.Outbox;
using Herald.Transport;
using Herald.Transport.InMemory;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace Herald.Tests.Hosting;

/// <summary>What runs while the host's consumer drains its in-flight handlers at shutdown.</summary>
public sealed class HostStopOrderTests
{
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(15);

    // The host stops its services in the reverse order of their registration, and AddHerald registers the consumer before
    // UseOutbox registers the relay: the relay stopped first, so what the draining handlers committed to the outbox waited
    // for the next start (and was lost with the in-memory outbox store).
    [Fact]
    public async Task WhileTheConsumerDrainsAtShutdown_TheOutboxRelayStillSends()
    {
        var transport = new StopWatchingTransport(new InMemoryTransport());
        var gate = new Gate();
        using var host = await StartHostAsync<HoldHandler>(transport, TimeSpan.FromMilliseconds(100), gate);
        await host.Services.GetRequiredService<IMessageBus>().SendAsync(new Hold());
        await gate.Entered.Task.WaitAsync(Deadline);

        var stopping = host.StopAsync();
        try
        {
            await transport.ConsumerStopping.Task.WaitAsync(Deadline);

            // Committed while the consumer drains, as the in-flight handler's own messages would be.
            await using (var scope = host.Services.CreateAsyncScope())
            {
                await scope.ServiceProvider.GetRequiredService<IOutbox>().SendAsync(new Note("during the drain"));
                await scope.ServiceProvider.GetRequiredService<IUnitOfWork>().CommitAsync();
            }

            await Eventually.UntilAsync(() => transport.Sent.Contains("stop-order-notes"), "the outbox row committed during the drain is relayed");
        }
        finally
        {
            gate.Release.TrySetResult();
            await stopping.WaitAsync(Deadline);
        }
    }

    // The last handler's commit wakes the relay before its ack, and the relay's stop (right after the consumer's) cancelled
    // the send that commit started: a durable outbox kept the row for the next start, the in-memory one lost it.
    [Fact]
    public async Task AtShutdown_TheOutboxRelaySendsWhatTheLastHandlerCommitted_EvenWhenTheStopCutItsSendShort()
    {
        var transport = new HoldingTransport(new InMemoryTransport(), "stop-order-notes", holdEverySend: false);
        using var host = await StartHostAsync<NotingHandler>(transport, TimeSpan.FromHours(1));
        await host.Services.GetRequiredService<IMessageBus>().SendAsync(new Hold());
        await transport.Held.Task.WaitAsync(Deadline);

        await host.StopAsync().WaitAsync(Deadline);

        Assert.Equal(1, transport.Delivered);
        Assert.Equal(0, await host.Services.GetRequiredService<IOutboxStore>().CountPendingAsync());
    }

    // The last pass lasts as long as the host's stop allows: once the stop token fires, what is left waits in the outbox.
    [Fact]
    public async Task AtShutdown_TheOutboxRelaysLastPass_EndsWhenTheHostsStopTokenFires()
    {
        var transport = new HoldingTransport(new InMemoryTransport(), "stop-order-notes", holdEverySend: true);
        using var host = await StartHostAsync<NotingHandler>(transport, TimeSpan.FromHours(1));
        await host.Services.GetRequiredService<IMessageBus>().SendAsync(new Hold());
        await transport.Held.Task.WaitAsync(Deadline);

        using var giveUp = new CancellationTokenSource(TimeSpan.FromMilliseconds(300));
        await host.StopAsync(giveUp.Token).WaitAsync(Deadline);

        Assert.Equal(0, transport.Delivered);
        Assert.Equal(1, await host.Services.GetRequiredService<IOutboxStore>().CountPendingAsync());
    }

    /// <summary>A started host whose endpoint handles <see cref="Hold"/> with <typeparamref name="THandler"/>, with notes routed through the outbox.</summary>
    private static async Task<IHost> StartHostAsync<THandler>(ITransport transport, TimeSpan pollInterval, Gate? gate = null)
        where THandler : class, IMessageHandler<Hold>
    {
        var builder = Host.CreateApplicationBuilder();
        builder.Logging.ClearProviders();
        builder.Services.AddSingleton(gate ?? new Gate());
        var endpoint = "stop-order-" + Guid.NewGuid().ToString("N")[..6];
        builder.Services.AddHerald(h => h
            .UseTransport(_ => transport)
            .AddMessageType<Note>()
            .AddHandler<THandler>()
            .Route<Hold>(endpoint)
            .Route<Note>("stop-order-notes")
            .UseOutbox(o => o.PollInterval = pollInterval)
            .Configure(o => o.EndpointName = endpoint));
        var host = builder.Build();
        await host.StartAsync();
        return host;
    }

    [MessageType("stop-order-hold")]
    public sealed record Hold;

    [MessageType("stop-order-note")]
    public sealed record Note(string Text);

    public sealed class Gate
    {
        public TaskCompletionSource Entered { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public TaskCompletionSource Release { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
    }

    public sealed class HoldHandler(Gate gate) : IMessageHandler<Hold>
    {
        public async ValueTask HandleAsync(Hold message, MessageContext context, CancellationToken cancellationToken)
        {
            gate.Entered.TrySetResult();
            await gate.Release.Task.WaitAsync(cancellationToken);
        }
    }

    /// <summary>Sends a note through the outbox: the message a handler leaves for the relay.</summary>
    public sealed class NotingHandler : IMessageHandler<Hold>
    {
        public ValueTask HandleAsync(Hold message, MessageContext context, CancellationToken cancellationToken) =>
            context.SendAsync(new Note("from the last handler"), cancellationToken: cancellationToken);
    }

    /// <summary>Holds the first send to <c>heldQueue</c> (or every one) until its token fires, as a slow broker would.</summary>
    private sealed class HoldingTransport(ITransport inner, string heldQueue, bool holdEverySend) : DelegatingTransport(inner)
    {
        private int _sends;
        private int _delivered;

        public TaskCompletionSource Held { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public int Delivered => Volatile.Read(ref _delivered);

        public override async ValueTask SendAsync(string queue, Envelope envelope, SendOptions? options = null, CancellationToken cancellationToken = default)
        {
            if (queue == heldQueue && (Interlocked.Increment(ref _sends) == 1 || holdEverySend))
            {
                Held.TrySetResult();
                await Task.Delay(Timeout.Infinite, cancellationToken);
            }

            await base.SendAsync(queue, envelope, options, cancellationToken);
            if (queue == heldQueue)
            {
                Interlocked.Increment(ref _delivered);
            }
        }
    }

    private sealed class StopWatchingTransport(ITransport inner) : DelegatingTransport(inner)
    {
        public TaskCompletionSource ConsumerStopping { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public ConcurrentBag<string> Sent { get; } = [];

        public override ValueTask SendAsync(string queue, Envelope envelope, SendOptions? options = null, CancellationToken cancellationToken = default)
        {
            Sent.Add(queue);
            return base.SendAsync(queue, envelope, options, cancellationToken);
        }

        public override async ValueTask<ITransportConsumer> ConsumeAsync(string queue, ConsumerOptions options, DeliveryHandler handler, CancellationToken cancellationToken = default) =>
            new WatchedConsumer(await base.ConsumeAsync(queue, options, handler, cancellationToken), ConsumerStopping);
    }

    private sealed class WatchedConsumer(ITransportConsumer inner, TaskCompletionSource stopping) : ITransportConsumer
    {
        public string Queue => inner.Queue;

        public Task StopAsync(CancellationToken cancellationToken = default)
        {
            stopping.TrySetResult();
            return inner.StopAsync(cancellationToken);
        }

        public ValueTask DisposeAsync() => inner.DisposeAsync();
    }
}
