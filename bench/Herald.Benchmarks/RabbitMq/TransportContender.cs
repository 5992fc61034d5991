using Herald.Messages;
using Herald.Transport;

namespace Herald.Benchmarks.RabbitMq;

/// <summary>
/// A Herald transport through the ITransport port, whichever engine is behind it: SendAsync of envelopes to a queue,
/// ConsumeAsync acking every delivery after deserializing its body. Each engine's contender only creates the transport.
/// </summary>
internal abstract class TransportContender : IBrokerContender
{
    private ITransport? _transport;

    public abstract string Name { get; }

    public abstract string Setup { get; }

    private ITransport Transport => _transport ?? throw new InvalidOperationException("Not started.");

    public async Task StartAsync(CancellationToken cancellationToken) => _transport = await CreateAsync(cancellationToken);

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

    /// <summary>Creates the transport under test, connected.</summary>
    protected abstract Task<ITransport> CreateAsync(CancellationToken cancellationToken);
}
