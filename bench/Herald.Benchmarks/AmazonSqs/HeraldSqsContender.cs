using Herald.AmazonSqs.Transport;
using Herald.Benchmarks.RabbitMq;
using Herald.Messages;
using Herald.Transport;

namespace Herald.Benchmarks.AmazonSqs;

/// <summary>Herald.AmazonSqs through the ITransport port: SendAsync to a queue (sends batched by the transport), ConsumeAsync acking every delivery.</summary>
internal sealed class HeraldSqsContender : IBrokerContender
{
    public const string ContenderName = "Herald";

    private ITransport? _transport;

    public string Name => ContenderName;

    public string Setup =>
        "`AmazonSqsTransportFactory.CreateAsync` defaults (standard queues, long polls of 20 s, visibility 30 s renewed while handled); " +
        $"`SendAsync` of an `Envelope` (Guid v7 id, 300-byte body; concurrent sends to one queue share `SendMessageBatch` calls); `ConsumeAsync` with `Prefetch = {BrokerWorkload.Prefetch}, MaxConcurrency = {BrokerWorkload.ConsumerConcurrency}`, a handler that deserializes the body, then `AckAsync` (deletes share `DeleteMessageBatch` calls)";

    private ITransport Transport => _transport ?? throw new InvalidOperationException("Not started.");

    public async Task StartAsync(CancellationToken cancellationToken) =>
        _transport = await AmazonSqsTransportFactory.CreateAsync(SqsBench.HeraldOptions(), cancellationToken: cancellationToken);

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
