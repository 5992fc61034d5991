using System.Collections.Concurrent;
using System.Text;
using Herald.AmazonSqs.Transport;
using Herald.Messages;
using Herald.Transport;

namespace Herald.AmazonSqs.Tests;

/// <summary>Transports on the emulator for one test, disposed after it, and every queue the test named deleted.</summary>
public abstract class SqsTestBase : IAsyncLifetime
{
    private readonly List<ITransport> _transports = [];
    private readonly ConcurrentDictionary<string, byte> _names = new(StringComparer.Ordinal);

    public Task InitializeAsync() => Task.CompletedTask;

    public async Task DisposeAsync()
    {
        foreach (var transport in _transports)
        {
            await transport.DisposeAsync();
        }

        await SqsEmulator.DeleteQueuesAsync(_names.Keys);
    }

    /// <summary>A unique queue or topic name, deleted (with what derives from it) after the test.</summary>
    protected string Name(string purpose)
    {
        var name = $"herald-{purpose}-{Guid.NewGuid():N}"[..Math.Min(48, 8 + purpose.Length + 32)];
        _names.TryAdd(name, 0);
        return name;
    }

    private protected async Task<AmazonSqsTransport> CreateTransportAsync(Action<AmazonSqsTransportOptions>? configure = null, TimeProvider? clock = null)
    {
        var transport = (AmazonSqsTransport)await AmazonSqsTransportFactory.CreateAsync(SqsEmulator.Options(configure), clock);
        _transports.Add(transport);
        return transport;
    }

    protected static Envelope NewEnvelope(string type = "sqs-test", string body = "{\"n\":1}", string? partitionKey = null) => new()
    {
        MessageId = Guid.CreateVersion7(),
        MessageType = type,
        Time = DateTimeOffset.UtcNow,
        PartitionKey = partitionKey,
        Body = Encoding.UTF8.GetBytes(body),

        // As EnvelopeFactory makes it: attempt 0 is a re-send on purpose (a dead letter retried), which FIFO queues must not deduplicate.
        DeliveryAttempt = 1,
    };
}
