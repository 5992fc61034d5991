using Herald.Conformance.Transport;
using Herald.Hosting;
using Microsoft.Extensions.DependencyInjection;

namespace Herald.RabbitMQ.Tests;

/// <summary>RabbitMQ against <see cref="LivenessConformance"/> (a prefetch of 4 on the real broker).</summary>
public sealed class LivenessTests : LivenessConformance, IAsyncLifetime
{
    private readonly string _prefix = $"herald-test-{Guid.NewGuid():N}"[..24];

    public Task InitializeAsync() => Task.CompletedTask;

    public Task DisposeAsync() => BrokerAdmin.DeleteAllAsync(_prefix);

    protected override string NewQueueName() => $"{_prefix}-live";

    protected override void UseTransport(HeraldBuilder herald) =>
        herald.UseRabbitMq(o =>
        {
            o.ConnectionUri = BrokerAdmin.AmqpUri;
            o.ClientProvidedName = _prefix;
        });
}
