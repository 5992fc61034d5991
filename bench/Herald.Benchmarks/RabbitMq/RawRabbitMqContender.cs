using RabbitMQ.Client;
using RabbitMQ.Client.Events;

namespace Herald.Benchmarks.RabbitMq;

/// <summary>The bare RabbitMQ.Client 7: what Herald.RabbitMQ adds its cost to.</summary>
/// <param name="publisherChannels">Channels publishing round-robin (the baseline uses as many as Herald's default).</param>
/// <param name="cloudEventHeaders">Also write the CloudEvents attributes Herald writes for such a message: the cost of the wire format alone.</param>
/// <param name="ackBatch">Ack every Nth delivery with multiple=true (1: every delivery on its own, the baseline).</param>
internal sealed class RawRabbitMqContender(Uri broker, int publisherChannels = 1, bool cloudEventHeaders = false, int ackBatch = 1) : IBrokerContender
{
    private static readonly byte[] SpecVersion = "1.0"u8.ToArray();
    private const string Source = "/herald";

    private IConnection? _connection;
    private IChannel[] _publishers = [];

    /// <summary>The name of the baseline acking each delivery on its own.</summary>
    public const string AckPerMessage = "RabbitMQ.Client (ack per message)";

    public string Name =>
        "RabbitMQ.Client"
        + (cloudEventHeaders ? " + CE headers" : "")
        + (ackBatch > 1 ? $" (acks of {ackBatch})" : " (ack per message)");

    /// <summary>The name of the baseline acking every <paramref name="batch"/>th delivery with multiple=true.</summary>
    public static string AcksOf(int batch) => $"RabbitMQ.Client (acks of {batch})";

    public string Setup =>
        $"RabbitMQ.Client 7.2.2, one connection; {(publisherChannels == 1 ? "one channel" : $"{publisherChannels} channels (round-robin)")} with `publisherConfirmationsEnabled` and `publisherConfirmationTrackingEnabled`, {BrokerWorkload.Outstanding} concurrent `BasicPublishAsync` " +
        $"(persistent, mandatory, message id + content type{(cloudEventHeaders ? " + what Herald adds for CloudEvents: the source as app id, the `cloudEvents:specversion` and `cloudEvents:time` headers" : "")}) to a durable classic queue; consume on its own channel: `AsyncEventingBasicConsumer`, `BasicQos({BrokerWorkload.Prefetch})`, a handler that deserializes the body to the message type, then " +
        (ackBatch > 1 ? $"`BasicAckAsync(multiple: true)` every {ackBatch} messages" : "`BasicAckAsync` per message") + " (dispatch concurrency 1)";

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
            if (cloudEventHeaders)
            {
                // What Herald adds for CloudEvents (docs/rabbitmq.md): id and type are the message id and type set above.
                properties.AppId = Source;
                properties.Headers = new Dictionary<string, object?>(StringComparer.Ordinal)
                {
                    ["cloudEvents:specversion"] = SpecVersion,
                    ["cloudEvents:time"] = System.Text.Encoding.UTF8.GetBytes(DateTime.UtcNow.ToString("yyyy-MM-dd'T'HH:mm:ss.fff'Z'", System.Globalization.CultureInfo.InvariantCulture)),
                };
            }

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
            BrokerWorkload.Decode(delivery.Body.Span);
            var n = Interlocked.Increment(ref received);
            if (ackBatch == 1)
            {
                await channel.BasicAckAsync(delivery.DeliveryTag, multiple: false, cancellationToken);
            }
            else if (n % ackBatch == 0 || n == count)
            {
                await channel.BasicAckAsync(delivery.DeliveryTag, multiple: true, cancellationToken);
            }

            if (n == count)
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
