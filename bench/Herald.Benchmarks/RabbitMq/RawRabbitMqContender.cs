using RabbitMQ.Client;
using RabbitMQ.Client.Events;

namespace Herald.Benchmarks.RabbitMq;

/// <summary>The bare RabbitMQ.Client 7: what Herald.RabbitMQ adds its cost to.</summary>
internal sealed class RawRabbitMqContender(Uri broker, int publisherChannels = 1) : IBrokerContender
{
    private IConnection? _connection;
    private IChannel[] _publishers = [];

    /// <summary>The baseline of the targets uses one publishing channel; a variant with as many as Herald uses shows what the channels alone buy.</summary>
    public string Name => publisherChannels == 1 ? "RabbitMQ.Client" : $"RabbitMQ.Client {publisherChannels} channels";

    public string Setup =>
        $"RabbitMQ.Client 7.2.2, one connection; {(publisherChannels == 1 ? "one channel" : $"{publisherChannels} channels (round-robin)")} with `publisherConfirmationsEnabled` and `publisherConfirmationTrackingEnabled`, {BrokerWorkload.Outstanding} concurrent `BasicPublishAsync` " +
        $"(persistent, mandatory, message id + content type) to a durable classic queue; consume on its own channel: `AsyncEventingBasicConsumer`, `BasicQos({BrokerWorkload.Prefetch})`, `BasicAckAsync` per message (dispatch concurrency 1)";

    private IChannel Publisher => _publishers.Length > 0 ? _publishers[0] : throw new InvalidOperationException("Not started.");

    public async Task StartAsync(CancellationToken cancellationToken)
    {
        _connection = await new ConnectionFactory { Uri = broker, ClientProvidedName = "raw-bench" }.CreateConnectionAsync(cancellationToken);
        _publishers = new IChannel[publisherChannels];
        for (var i = 0; i < _publishers.Length; i++)
        {
            _publishers[i] = await _connection.CreateChannelAsync(new CreateChannelOptions(publisherConfirmationsEnabled: true, publisherConfirmationTrackingEnabled: true), cancellationToken);
        }
    }

    public async Task PublishAsync(string queue, int count, int outstanding, CancellationToken cancellationToken)
    {
        await Publisher.QueueDeclareAsync(queue, durable: true, exclusive: false, autoDelete: false, cancellationToken: cancellationToken);
        await BrokerWorkload.RunConcurrentlyAsync(count, outstanding, async (i, ct) =>
        {
            var properties = new BasicProperties
            {
                Persistent = true,
                MessageId = Guid.CreateVersion7().ToString(),
                ContentType = "application/json",
                Type = "order-placed",
                Timestamp = new AmqpTimestamp(DateTimeOffset.UtcNow.ToUnixTimeSeconds()),
            };
            await _publishers[i % _publishers.Length].BasicPublishAsync(string.Empty, queue, mandatory: true, properties, BrokerWorkload.Body, ct);
        }, cancellationToken);
    }

    public async Task<IAsyncDisposable> ConsumeAsync(string queue, int count, CancellationToken cancellationToken)
    {
        var received = 0;
        var done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var channel = await _connection!.CreateChannelAsync(cancellationToken: cancellationToken);
        await channel.BasicQosAsync(0, BrokerWorkload.Prefetch, false, cancellationToken);
        var consumer = new AsyncEventingBasicConsumer(channel);
        consumer.ReceivedAsync += async (_, delivery) =>
        {
            await channel.BasicAckAsync(delivery.DeliveryTag, multiple: false, cancellationToken);
            if (Interlocked.Increment(ref received) == count)
            {
                done.TrySetResult();
            }
        };
        var tag = await channel.BasicConsumeAsync(queue, autoAck: false, consumer, cancellationToken);
        await BrokerWorkload.WaitAsync(done.Task, Name, () => Volatile.Read(ref received), count, cancellationToken);
        return new StopOnDispose(async () =>
        {
            await channel.BasicCancelAsync(tag, cancellationToken: cancellationToken);
            await channel.CloseAsync(cancellationToken);
            await channel.DisposeAsync();
        });
    }

    /// <summary>Deletes what a run declared (queues and, for MassTransit, the exchange of the same name).</summary>
    public async Task DeleteAsync(IEnumerable<string> queues, CancellationToken cancellationToken)
    {
        await using var channel = await _connection!.CreateChannelAsync(cancellationToken: cancellationToken);
        foreach (var name in queues)
        {
            await channel.QueueDeleteAsync(name, ifUnused: false, ifEmpty: false, cancellationToken: cancellationToken);
            await channel.ExchangeDeleteAsync(name, ifUnused: false, cancellationToken: cancellationToken);
        }
    }

    public async ValueTask DisposeAsync()
    {
        foreach (var publisher in _publishers)
        {
            await publisher.DisposeAsync();
        }

        if (_connection is not null)
        {
            await _connection.DisposeAsync();
        }
    }
}
