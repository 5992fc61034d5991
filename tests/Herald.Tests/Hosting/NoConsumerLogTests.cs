using Herald.Handling;
using Herald.Messages;
using Herald.Tests.Reliability;
using Microsoft.Extensions.Logging;

namespace Herald.Tests.Hosting;

/// <summary>A host that starts no consumer says so once at start, naming why.</summary>
public sealed class NoConsumerLogTests
{
    [MessageType("no-consumer-ping")]
    public sealed record Ping(int N);

    // A host that only sends (or whose handlers were never registered) consumed nothing and said nothing: a send without a
    // route waited in its own queue, and nothing in the log told why no handler ran.
    [Fact]
    public async Task AHostWithoutHandlers_LogsThatItStartsNoConsumer_AndWhy()
    {
        await using var host = await ReliabilityHost.StartAsync(h => h.AddMessageType<Ping>());

        var entry = Assert.Single(host.Logs.Entries, e => e.EventId == 1005);
        Assert.Equal(LogLevel.Information, entry.Level);
        Assert.Contains($"Endpoint '{host.Endpoint}' starts no consumer (it has no message handler)", entry.Message, StringComparison.Ordinal);
        Assert.DoesNotContain(host.Logs.Entries, e => e.EventId == 1001);
    }

    [Fact]
    public async Task AHostWhoseConsumerIsSwitchedOff_LogsWhichOptionDidIt()
    {
        await using var host = await ReliabilityHost.StartAsync(h => h
            .AddHandler<PingHandler>()
            .Configure(o => o.StartConsumer = false));

        var entry = Assert.Single(host.Logs.Entries, e => e.EventId == 1005);
        Assert.Contains("HeraldOptions.StartConsumer is false", entry.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task AHostWithHandlers_DoesNotLogIt()
    {
        await using var host = await ReliabilityHost.StartAsync(h => h.AddHandler<PingHandler>());

        Assert.Contains(host.Logs.Entries, e => e.EventId == 1001);
        Assert.DoesNotContain(host.Logs.Entries, e => e.EventId == 1005);
    }

    public sealed class PingHandler : IMessageHandler<Ping>
    {
        public ValueTask HandleAsync(Ping message, MessageContext context, CancellationToken cancellationToken) => ValueTask.CompletedTask;
    }
}
