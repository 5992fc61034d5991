using Herald.RabbitMQ.Transport;
using Herald.Messages;
using Herald.RabbitMQ;
using Herald.Transport;

namespace Herald.Benchmarks.RabbitMq;

/// <summary>Herald.RabbitMQ through the ITransport port: SendAsync to a queue, ConsumeAsync acking every delivery.</summary>
/// <param name="ackEach">Turn ack coalescing off (AckBatchSize = 1): every delivery acked on its own, as the raw baseline does.</param>
internal sealed class HeraldRabbitMqContender(Uri broker, bool ackEach) : IBrokerContender
{
    /// <summary>The name of the contender acking each delivery on its own.</summary>
    public const string AckPerMessage = "Herald (ack per message)";

    /// <summary>The name of the contender with Herald's default, coalesced acks.</summary>
    public const string CoalescedAcks = "Herald (coalesced acks)";

    private ITransport? _transport;

    public string Name => ackEach ? AckPerMessage : CoalescedAcks;

    public string Setup =>
        $"`RabbitMqTransportFactory.CreateAsync` defaults (publisher confirms on, {new RabbitMqTransportOptions().PublisherChannels} publisher channels, classic durable queues, persistent messages); " +
        $"`SendAsync` of an `Envelope` (Guid v7 id, 300-byte body); `ConsumeAsync` with `Prefetch = {BrokerWorkload.Prefetch}, MaxConcurrency = {BrokerWorkload.ConsumerConcurrency}`, a handler that deserializes the body to the message type, then `AckAsync`" +
        (ackEach ? "; `AckBatchSize = 1`: each ack sent on its own as it is made" : $"; acks coalesced, the default (up to {BrokerWorkload.Prefetch / 4} handled deliveries or 2 ms share one `basic.ack multiple=true`)");

    private ITransport Transport => _transport ?? throw new InvalidOperationException("Not started.");

    public async Task StartAsync(CancellationToken cancellationToken) =>
        _transport = await RabbitMqTransportFactory.CreateAsync(new RabbitMqTransportOptions { ConnectionUri = broker, ClientProvidedName = "herald-bench", AckBatchSize = ackEach ? 1 : null }, cancellationToken: cancellationToken);

    public async Task PublishAsync(string queue, int count, int outstanding, CancellationToken cancellationToken)
    {
        await Transport.DeclareQueueAsync(queue, cancellationToken);
        await BrokerWorkload.RunConcurrentlyAsync(count, outstanding, async (_, ct) =>
        {
            var envelope = new Envelope
            {
                MessageId = Guid.CreateVersion7(),
                MessageType = "order-placed",
                Time = DateTimeOffset.UtcNow,
                Body = BrokerWorkload.Body,
            };
            await Transport.SendAsync(queue, envelope, cancellationToken: ct);
        }, cancellationToken);
    }

    public async Task<IAsyncDisposable> ConsumeAsync(string queue, int count, CancellationToken cancellationToken)
    {
        var received = 0;
        var done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var consumer = await Transport.ConsumeAsync(
            queue,
            new ConsumerOptions { Prefetch = BrokerWorkload.Prefetch, MaxConcurrency = BrokerWorkload.ConsumerConcurrency },
            async (delivery, ct) =>
            {
                BrokerWorkload.Decode(delivery.Envelope.Body.Span);
                await delivery.AckAsync(ct);
                if (Interlocked.Increment(ref received) == count)
                {
                    done.TrySetResult();
                }
            },
            cancellationToken);
        await BrokerWorkload.WaitAsync(done.Task, Name, () => Volatile.Read(ref received), count, cancellationToken);
        return new StopOnDispose(async () =>
        {
            await consumer.StopAsync(cancellationToken);
            await consumer.DisposeAsync();
        });
    }

    public async ValueTask DisposeAsync()
    {
        if (_transport is not null)
        {
            await _transport.DisposeAsync();
        }
    }
}
