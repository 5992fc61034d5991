using System.Globalization;
using Herald.Processes;
using Herald.Reliability.Outbox;
using Herald.Conformance;
using Herald.Transport.InMemory;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;

namespace Herald.Sqlite.Tests.Reliability;

/// <summary>
/// Issue 4: "a process killed with SIGKILL between the database commit and the send still sends every committed message
/// after restart". The child (Herald.CrashChild) commits outbox messages, enlists more in a unit of work it never
/// commits, and is really killed; a host started here on the same file then relays.
/// </summary>
public sealed class OutboxCrashTests : IDisposable
{
    private const int Messages = 25;
    private readonly TempDatabase _database = new();

    public void Dispose() => _database.Dispose();

    [Fact]
    public async Task ProcessKilledBetweenCommitAndSend_SendsEveryCommittedMessageExactlyOnceAfterRestart_AndNothingUncommitted()
    {
        var (committed, uncommitted) = await RunChildUntilKilledAsync();
        Assert.Equal(Messages, committed.Count);
        Assert.Equal(Messages, uncommitted.Count);

        var transport = new RecordingTransport(new InMemoryTransport(InMemoryTransportOptions.Default, TimeProvider.System));
        await transport.DeclareQueueAsync("crash-queue");
        using var host = await SqliteReliabilityHostTests.StartAsync(_database.Path, h => h
            .Configure(o => o.StartConsumer = false)
            .UseTransport(_ => transport)
            .UseOutbox(o => o.PollInterval = TimeSpan.FromMilliseconds(50)));
        var outbox = host.Services.GetRequiredService<IOutboxStore>();

        await Eventually.UntilAsync(() => SentIds(transport).Count >= Messages, "every committed message is sent", TimeSpan.FromSeconds(30));
        await Eventually.UntilAsync(async () => await outbox.CountPendingAsync() == 0, "nothing is pending");
        await host.StopAsync();

        // Nothing was sent before the kill, so here every committed message goes out exactly once (the guarantee in general
        // is at least once: a kill between a send and its mark would send that message again).
        var sent = SentIds(transport);
        Assert.Equal(committed.Order(), sent.Order());
        Assert.Empty(sent.Intersect(uncommitted));
        foreach (var id in uncommitted)
        {
            Assert.Null(await outbox.GetAsync(id));
        }
    }

    // The child gives each envelope its outbox row's id, so a sent envelope names its row.
    private static List<Guid> SentIds(RecordingTransport transport) =>
        [.. transport.Sent.Where(s => s.Destination == "crash-queue").Select(s => s.Envelope.MessageId)];

    private async Task<(List<Guid> Committed, List<Guid> Uncommitted)> RunChildUntilKilledAsync()
    {
        using var child = await CrashChildProcess.StartAsync("sqlite", _database.Path, Messages.ToString(CultureInfo.InvariantCulture));
        Assert.NotEqual(0, await child.KillAsync());
        return (child.Committed, child.Uncommitted);
    }
}
