using System.Collections.Concurrent;
using System.Text;
using Herald.Messages;
using Herald.Nats.Transport;
using Herald.Transport;
using Microsoft.Extensions.Logging;

namespace Herald.Nats.Tests;

/// <summary>A test with stream and subject prefixes of its own, whose transports are disposed and streams deleted afterwards.</summary>
public abstract class NatsTestBase : IAsyncLifetime
{
    private readonly List<ITransport> _transports = [];

    protected (string Streams, string Subjects) Prefixes { get; } = NatsServer.NewPrefixes();

    internal NatsNames Names => new(Prefixes.Subjects, Prefixes.Streams);

    protected static TimeSpan Timeout { get; } = TimeSpan.FromSeconds(15);

    public Task InitializeAsync() => Task.CompletedTask;

    public async Task DisposeAsync()
    {
        foreach (var transport in _transports)
        {
            await transport.DisposeAsync();
        }

        await NatsServer.DeleteStreamsAsync(Prefixes.Streams);
    }

    /// <summary>Options on the test server with this test's prefixes.</summary>
    protected NatsTransportOptions NewOptions(Action<NatsTransportOptions>? configure = null)
    {
        var options = new NatsTransportOptions { Url = NatsServer.Url, StreamPrefix = Prefixes.Streams, SubjectPrefix = Prefixes.Subjects };
        configure?.Invoke(options);
        return options;
    }

    internal async Task<NatsTransport> CreateTransportAsync(
        Action<NatsTransportOptions>? configure = null, TimeProvider? timeProvider = null, ILoggerFactory? loggerFactory = null)
    {
        var transport = await NatsTransportFactory.CreateAsync(NewOptions(configure), timeProvider, loggerFactory);
        _transports.Add(transport);
        return (NatsTransport)transport;
    }

    protected static Envelope NewEnvelope(string text, string? partitionKey = null) => new()
    {
        MessageId = Guid.CreateVersion7(),
        MessageType = "nats-test",
        Time = DateTimeOffset.UtcNow,
        PartitionKey = partitionKey,
        Body = Encoding.UTF8.GetBytes("{\"text\":\"" + text + "\"}"),
        DeliveryAttempt = 1,
    };

    protected static string TextOf(Envelope envelope) => Encoding.UTF8.GetString(envelope.Body.Span)[9..^2];

    /// <summary>Starts a consumer that records each delivery's envelope and then runs <paramref name="behaviour"/>.</summary>
    protected static async Task<(ITransportConsumer Consumer, ConcurrentQueue<Envelope> Seen)> ConsumeAsync(
        ITransport transport, string queue, Func<Delivery, CancellationToken, ValueTask>? behaviour = null, ConsumerOptions? options = null)
    {
        var seen = new ConcurrentQueue<Envelope>();
        var consumer = await transport.ConsumeAsync(queue, options ?? ConsumerOptions.Default, async (delivery, cancellationToken) =>
        {
            seen.Enqueue(delivery.Envelope);
            if (behaviour is not null)
            {
                await behaviour(delivery, cancellationToken);
            }
        });
        return (consumer, seen);
    }
}
