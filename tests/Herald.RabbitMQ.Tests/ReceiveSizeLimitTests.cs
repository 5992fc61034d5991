using Herald.Conformance.Transport;
using Herald.Hosting;
using Microsoft.Extensions.DependencyInjection;
using RabbitMQ.Client;

namespace Herald.RabbitMQ.Tests;

/// <summary>RabbitMQ against <see cref="ReceiveSizeLimitConformance"/>: a plain AMQP client publishes a body past the send limit.</summary>
public sealed class ReceiveSizeLimitTests : ReceiveSizeLimitConformance, IAsyncLifetime
{
    private readonly string _prefix = $"herald-test-{Guid.NewGuid():N}"[..24];

    public Task InitializeAsync() => Task.CompletedTask;

    public Task DisposeAsync() => BrokerAdmin.DeleteAllAsync(_prefix);

    protected override string NewQueueName() => $"{_prefix}-size";

    protected override void UseTransport(HeraldBuilder herald, int maxMessageBytes) =>
        herald.UseRabbitMq(o =>
        {
            o.ConnectionUri = BrokerAdmin.AmqpUri;
            o.ClientProvidedName = _prefix;
            o.MaxMessageBytes = maxMessageBytes;
        });

    protected override async Task WriteRawAsync(IServiceProvider services, string queue, Guid messageId, byte[] body)
    {
        await using var connection = await BrokerAdmin.ConnectAsync(_prefix + "-raw");
        await using var channel = await connection.CreateChannelAsync();
        var properties = new BasicProperties
        {
            MessageId = messageId.ToString(),
            Type = ProbeType,
            Timestamp = new AmqpTimestamp(DateTimeOffset.UtcNow.ToUnixTimeSeconds()),
            ContentType = "application/json",
        };
        await channel.BasicPublishAsync(string.Empty, queue, mandatory: false, properties, body);
    }
}
