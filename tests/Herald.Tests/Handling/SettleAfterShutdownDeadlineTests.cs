using Herald.Conformance.Transport;
using System.Collections.Concurrent;
using Herald.Handling;
using Herald.Hosting;
using Herald.Messages;
using Herald.Transport;
using Herald.Transport.InMemory;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace Herald.Tests.Handling;

/// <summary>
/// A handler that finishes after the host's shutdown deadline (it did not watch its token) has done its work: its message
/// must be settled as handled, not left for the broker to deliver again. The settlement used to run with the handler's
/// cancelled token, so a transport whose ack honours the token (RabbitMQ's client does, without writing the frame)
/// dropped it and the message was handled a second time after the restart.
/// </summary>
public sealed class SettleAfterShutdownDeadlineTests
{
    [MessageType("settle-after-deadline")]
    public sealed record Work(int Id);

    public sealed class Probe
    {
        public TaskCompletionSource Started { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public int Finished;
    }

    // Runs past the shutdown deadline: it waits for its token to fire, then finishes its work anyway.
    public sealed class SlowHandler(Probe probe) : IMessageHandler<Work>
    {
        public async ValueTask HandleAsync(Work message, MessageContext context, CancellationToken cancellationToken)
        {
            probe.Started.TrySetResult();
            var deadline = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            await using (cancellationToken.Register(() => deadline.TrySetResult()))
            {
                await deadline.Task.WaitAsync(TimeSpan.FromSeconds(30), CancellationToken.None);
            }

            Interlocked.Increment(ref probe.Finished);
        }
    }

    [Fact]
    public async Task AHandlerFinishingAfterTheShutdownDeadline_IsAcked_WithATokenThatIsNotCancelled()
    {
        var probe = new Probe();
        var transport = new TokenHonouringTransport(new InMemoryTransport(InMemoryTransportOptions.Default, TimeProvider.System));
        var builder = Host.CreateApplicationBuilder();
        builder.Logging.ClearProviders();
        builder.Services.AddSingleton(probe);
        builder.Services.AddHerald(h => h
            .UseTransport(_ => transport)
            .AddMessageType<Work>()
            .AddHandler<SlowHandler>()
            .Configure(o =>
            {
                o.EndpointName = "settle-after-deadline";
                o.MaxConcurrency = 1;
                o.ShutdownTimeout = TimeSpan.FromMilliseconds(100);
            }));
        using var host = builder.Build();
        await host.StartAsync();
        await host.Services.GetRequiredService<IMessageBus>().PublishAsync(new Work(1));
        await probe.Started.Task.WaitAsync(TimeSpan.FromSeconds(30));

        await host.StopAsync();

        Assert.Equal(1, probe.Finished);
        Assert.Equal(["ack"], transport.Settlements);
    }

    // Settles through the inner transport, refusing (as RabbitMQ's client does) a settlement whose token has fired.
    private sealed class TokenHonouringTransport(ITransport inner) : DelegatingTransport(inner)
    {
        private readonly ConcurrentQueue<string> _settlements = new();

        public IReadOnlyList<string> Settlements => [.. _settlements];

        public override ValueTask<ITransportConsumer> ConsumeAsync(string queue, ConsumerOptions options, DeliveryHandler handler, CancellationToken cancellationToken = default) =>
            base.ConsumeAsync(queue, options, (delivery, ct) => handler(new Checked(delivery, _settlements), ct), cancellationToken);

        private sealed class Checked(Delivery inner, ConcurrentQueue<string> settlements) : Delivery(inner.Envelope, inner.Queue, inner.DecodeFailure)
        {
            protected override ValueTask OnAckAsync(CancellationToken cancellationToken)
            {
                cancellationToken.ThrowIfCancellationRequested();
                settlements.Enqueue("ack");
                return inner.AckAsync(cancellationToken);
            }

            protected override ValueTask OnNackAsync(TimeSpan delay, CancellationToken cancellationToken)
            {
                cancellationToken.ThrowIfCancellationRequested();
                settlements.Enqueue("nack");
                return inner.NackAsync(delay, cancellationToken);
            }

            protected override ValueTask OnDeadLetterAsync(string reason, CancellationToken cancellationToken)
            {
                cancellationToken.ThrowIfCancellationRequested();
                settlements.Enqueue("dead-letter");
                return inner.DeadLetterAsync(reason, cancellationToken);
            }
        }
    }
}
