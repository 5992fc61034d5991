using Herald.RabbitMQ.Transport;
using System.Collections.Concurrent;
using Herald.Messages;
using Herald.Transport;
using RabbitMQ.Client;

namespace Herald.RabbitMQ.Tests;

/// <summary>
/// Gives each test unique names (a prefix with a short guid), transports that connect to the test broker, and a
/// clean-up that deletes every queue and exchange the test declared.
/// </summary>
public abstract class RabbitMqTestBase : IAsyncLifetime
{
    private readonly List<IAsyncDisposable> _disposables = [];

    protected string Prefix { get; } = $"herald-test-{Guid.NewGuid():N}"[..24];

    protected string Name(string what) => $"{Prefix}-{what}";

    public virtual Task InitializeAsync() => Task.CompletedTask;

    public virtual async Task DisposeAsync()
    {
        for (var i = _disposables.Count - 1; i >= 0; i--)
        {
            await _disposables[i].DisposeAsync();
        }

        await BrokerAdmin.DeleteAllAsync(Prefix);
    }

    protected async Task<ITransport> CreateTransportAsync(Action<RabbitMqTransportOptions>? configure = null, TimeProvider? timeProvider = null)
    {
        var options = new RabbitMqTransportOptions
        {
            ConnectionUri = BrokerAdmin.AmqpUri,
            ClientProvidedName = Prefix,
            NetworkRecoveryInterval = TimeSpan.FromMilliseconds(250),
        };
        configure?.Invoke(options);
        var transport = await RabbitMqTransportFactory.CreateAsync(options, timeProvider);
        _disposables.Add(transport);
        return transport;
    }

    protected async Task<IChannel> CreateRawChannelAsync()
    {
        var connection = await BrokerAdmin.ConnectAsync(Prefix + "-raw");
        _disposables.Add(connection);
        var channel = await connection.CreateChannelAsync();
        _disposables.Add(channel);
        return channel;
    }

    protected async Task<ITransportConsumer> ConsumeAsync(ITransport transport, string queue, DeliveryHandler handler, ConsumerOptions? options = null)
    {
        var consumer = await transport.ConsumeAsync(queue, options ?? ConsumerOptions.Default, handler);
        _disposables.Add(consumer);
        return consumer;
    }

    /// <summary>Gets the next message of a queue, polling until one is there.</summary>
    protected static Task<BasicGetResult> GetAsync(IChannel channel, string queue) =>
        Herald.Conformance.Eventually.ValueAsync(() => new ValueTask<BasicGetResult?>(channel.BasicGetAsync(queue, autoAck: true)), $"a message arrives in '{queue}'");

    protected static Envelope NewEnvelope(string type = "test-message", string body = "{\"n\":1}", string? partitionKey = null) => new()
    {
        MessageId = Guid.CreateVersion7(),
        MessageType = type,
        Time = DateTimeOffset.UtcNow,
        PartitionKey = partitionKey,
        Body = System.Text.Encoding.UTF8.GetBytes(body),
    };
}

/// <summary>Collects what a consumer handled, for tests to wait on.</summary>
internal sealed class Collector
{
    private readonly ConcurrentQueue<Envelope> _envelopes = new();

    public IReadOnlyList<Envelope> Envelopes => [.. _envelopes];

    public int Count => _envelopes.Count;

    public DeliveryHandler Handler => (delivery, _) =>
    {
        _envelopes.Enqueue(delivery.Envelope);
        return ValueTask.CompletedTask;
    };

    public void Add(Envelope envelope) => _envelopes.Enqueue(envelope);

    public Task WaitForAsync(int count, TimeSpan? timeout = null) =>
        Herald.Conformance.Eventually.UntilAsync(() => _envelopes.Count >= count, $"{count} messages were handled (have {_envelopes.Count})", timeout);
}
