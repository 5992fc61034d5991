using Herald.Hosting;
using Herald.Messages;
using Herald.Testing.Observing;
using Herald.Testing.Tests.Sample;
using Herald.Transport;
using Herald.Transport.InMemory;
using Microsoft.Extensions.DependencyInjection;

namespace Herald.Testing.Tests;

/// <summary>
/// A message handed back for redelivery at once can be taken by another worker and settled before the nack that handed
/// it back has returned. The harness must still count it as settled, and not as owed again forever.
/// </summary>
public sealed class RedeliveryRaceTests
{
    [Fact]
    public async Task RedeliveryAtOnce_SettledBeforeTheNackReturns_LeavesTheHostIdle()
    {
        var gateway = new CardGateway { Outages = 1 };
        await using var harness = await SampleHarness.StartAsync(gateway, h =>
        {
            h.Services.Configure<HeraldOptions>(o => o.MaxConcurrency = 2);
            h.ConfigureRetries<ChargeCard>(r => r.Immediate(0).Delayed(1, TimeSpan.Zero, TimeSpan.Zero));
            h.UseTransport(sp => new NackReturnsAfterRedeliveryTransport(new InMemoryTransport(InMemoryTransportOptions.Default, sp.GetRequiredService<TimeProvider>())));
        });

        var sent = await harness.SendAsync(new ChargeCard(Guid.NewGuid(), 10m));

        var settled = await harness.Handled.ExpectSettledAsync(sent.Envelope.MessageId);
        Assert.Equal(HandlingOutcome.Succeeded, settled.Outcome);
        await harness.Handled.ExpectAsync<ChargeCard>(HandlingOutcome.Retrying);
        await harness.WaitForIdleAsync(TimeSpan.FromSeconds(2));
    }

    /// <summary>The in-memory transport, but a nack returns only once the copy it handed back was acked by another worker.</summary>
    private sealed class NackReturnsAfterRedeliveryTransport(InMemoryTransport inner) : ITransport
    {
        private readonly TaskCompletionSource _acked = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public string Name => inner.Name;

        public TransportCapabilities Capabilities => inner.Capabilities;

        public ValueTask DeclareQueueAsync(string queue, CancellationToken cancellationToken = default) => inner.DeclareQueueAsync(queue, cancellationToken);

        public ValueTask BindAsync(string topic, string queue, CancellationToken cancellationToken = default) => inner.BindAsync(topic, queue, cancellationToken);

        public ValueTask SendAsync(string queue, Envelope envelope, SendOptions? options = null, CancellationToken cancellationToken = default) => inner.SendAsync(queue, envelope, options, cancellationToken);

        public ValueTask PublishAsync(string topic, Envelope envelope, SendOptions? options = null, CancellationToken cancellationToken = default) => inner.PublishAsync(topic, envelope, options, cancellationToken);

        public ValueTask<ITransportConsumer> ConsumeAsync(string queue, ConsumerOptions options, DeliveryHandler handler, CancellationToken cancellationToken = default) =>
            inner.ConsumeAsync(queue, options, (delivery, token) => handler(new Held(delivery, this), token), cancellationToken);

        public ValueTask DisposeAsync() => inner.DisposeAsync();

        private sealed class Held(Delivery inner, NackReturnsAfterRedeliveryTransport transport) : Delivery(inner.Envelope, inner.Queue)
        {
            protected override async ValueTask OnAckAsync(CancellationToken cancellationToken)
            {
                await inner.AckAsync(cancellationToken);
                transport._acked.TrySetResult();
            }

            protected override ValueTask OnNackAsync(TimeSpan delay, CancellationToken cancellationToken) => OnNackAsync(delay, new Dictionary<string, string>(), cancellationToken);

            protected override async ValueTask OnNackAsync(TimeSpan delay, IReadOnlyDictionary<string, string> headers, CancellationToken cancellationToken)
            {
                await inner.NackAsync(delay, headers, cancellationToken);

                // Another worker takes the copy at once; this nack returns only after that one was settled.
                await transport._acked.Task.WaitAsync(TimeSpan.FromSeconds(5), cancellationToken);
            }

            protected override ValueTask OnDeadLetterAsync(string reason, CancellationToken cancellationToken) => inner.DeadLetterAsync(reason, cancellationToken);
        }
    }
}
