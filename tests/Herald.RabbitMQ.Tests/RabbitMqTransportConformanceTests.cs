using Herald.RabbitMQ.Transport;
using System.Collections.Concurrent;
using Herald.Conformance.Transport;
using Herald.Transport;
using Xunit.Abstractions;

namespace Herald.RabbitMQ.Tests;

/// <summary>
/// Runs the transport conformance suite against the real broker. Each test gets its own connection names, so the kill
/// hook closes only this test's connections (through the management API), and every queue and exchange the test
/// touched is deleted afterwards, with the retry, delay and dead-letter queues derived from it.
/// </summary>
public sealed class RabbitMqTransportConformanceTests(ITestOutputHelper output) : TransportConformance(output)
{
    private readonly string _clientName = $"herald-conformance-{Guid.NewGuid():N}";
    private readonly ConcurrentDictionary<string, byte> _names = new(StringComparer.Ordinal);
    private int _transports;

    protected override bool CanKillConnection => true;

    protected override async Task<ITransport> CreateTransportAsync()
    {
        var transport = await RabbitMqTransportFactory.CreateAsync(new RabbitMqTransportOptions
        {
            ConnectionUri = BrokerAdmin.AmqpUri,
            ClientProvidedName = $"{_clientName}-{Interlocked.Increment(ref _transports)}",
            NetworkRecoveryInterval = TimeSpan.FromMilliseconds(250),
        });
        return new NameTrackingTransport(transport, _names);
    }

    /// <summary>
    /// Closes the transport's two connections from the broker side, then waits until the client has recovered them
    /// (connection, topology, channels and consumers), as a real outage would end. Sends made while it is down throw.
    /// </summary>
    protected override async Task KillConnectionAsync(ITransport transport)
    {
        var rabbit = (RabbitMqTransport)((NameTrackingTransport)transport).Inner;
        var before = rabbit.Recoveries;
        var killed = await BrokerAdmin.KillConnectionsAsync(rabbit.Options.ClientProvidedName + ":", atLeast: 2);
        Assert.Equal(2, killed);
        await Herald.Conformance.Eventually.UntilAsync(() => rabbit.Recoveries >= before + 2, "both connections recovered", TimeSpan.FromSeconds(30));
    }

    public override async Task DisposeAsync()
    {
        await base.DisposeAsync();
        foreach (var name in _names.Keys)
        {
            await BrokerAdmin.DeleteAllAsync(name);
        }
    }
}
