using System.Diagnostics;
using Herald.Reliability.Outbox;
using Herald.Testing;
using Herald.Transport.InMemory;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;

namespace Herald.Sqlite.Tests.Reliability;

/// <summary>
/// Issue 4: "a process killed with SIGKILL between the database commit and the send still sends every committed message
/// after restart". The child (Herald.Sqlite.CrashChild) commits outbox messages, enlists more in a unit of work it never
/// commits, and is really killed; a host started here on the same file then relays.
/// </summary>
public sealed class OutboxCrashTests : IDisposable
{
    private const int Messages = 25;
    private static readonly TimeSpan ChildDeadline = TimeSpan.FromSeconds(60);
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
        var start = new ProcessStartInfo(Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") is { Length: > 0 } dotnet ? dotnet : "dotnet")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        start.ArgumentList.Add(ChildPath());
        start.ArgumentList.Add(_database.Path);
        start.ArgumentList.Add(Messages.ToString(System.Globalization.CultureInfo.InvariantCulture));
        using var child = Process.Start(start) ?? throw new InvalidOperationException("The crash child did not start.");
        var errors = child.StandardError.ReadToEndAsync();
        try
        {
            using var deadline = new CancellationTokenSource(ChildDeadline);
            List<Guid>? committed = null;
            List<Guid>? uncommitted = null;
            while (uncommitted is null)
            {
                var line = await child.StandardOutput.ReadLineAsync(deadline.Token)
                    ?? throw new InvalidOperationException($"The crash child ended early (exit {(child.HasExited ? child.ExitCode : -1)}): {await errors}");
                if (line.StartsWith("committed ", StringComparison.Ordinal))
                {
                    committed = Ids(line);
                }
                else if (line.StartsWith("uncommitted ", StringComparison.Ordinal))
                {
                    uncommitted = Ids(line);
                }
            }

            Assert.NotNull(committed);
            child.Kill();
            await child.WaitForExitAsync(deadline.Token);
            Assert.NotEqual(0, child.ExitCode);
            return (committed, uncommitted);
        }
        finally
        {
            if (!child.HasExited)
            {
                child.Kill(entireProcessTree: true);
            }
        }
    }

    private static List<Guid> Ids(string line) => [.. line[(line.IndexOf(' ', StringComparison.Ordinal) + 1)..].Split(',').Select(Guid.Parse)];

    // The child is built by the ProjectReference (not referenced as an assembly) into its own output folder, which sits in
    // the same place relative to this test project's, for whichever configuration runs.
    private static string ChildPath()
    {
        var output = new DirectoryInfo(AppContext.BaseDirectory.TrimEnd(Path.DirectorySeparatorChar));
        var framework = output.Name;
        var configuration = output.Parent!.Name;
        var tests = output.Parent.Parent!.Parent!.Parent!.FullName;
        var path = Path.Combine(tests, "Herald.Sqlite.CrashChild", "bin", configuration, framework, "Herald.Sqlite.CrashChild.dll");
        return File.Exists(path) ? path : throw new FileNotFoundException("Build Herald.Sqlite.CrashChild first (the test project's build does).", path);
    }
}
