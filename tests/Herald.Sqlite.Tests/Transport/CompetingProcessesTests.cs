using System.Globalization;
using System.Text;
using Herald.Messages;
using Herald.Sqlite.Transport;
using Herald.Transport;
using Herald.Transport.ConsumerChild;
using Xunit.Abstractions;

namespace Herald.Sqlite.Tests.Transport;

/// <summary>
/// Issue 5: "two consumer processes on one queue never both complete the same message", with real processes: two
/// Herald.Transport.ConsumerChild processes consume one queue of one database file while this test sends to it.
/// </summary>
public sealed class CompetingProcessesTests(ITestOutputHelper output) : IDisposable
{
    private const int Messages = 2_000;
    private const int Concurrency = 2;
    private const int FirstBatch = 300;
    private const int KilledAfter = 200;
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(60);
    private readonly TempDatabase _database = new();

    public void Dispose() => _database.Dispose();

    [Fact]
    public async Task TwoProcesses_OnOneQueue_NeverBothCompleteAMessage_AndBothDoWork()
    {
        const string queue = "competing";
        await using var transport = await SqliteQueueTransportFactory.OpenAsync(_database.Path);
        await transport.DeclareQueueAsync(queue);
        await using var a = await StartChildAsync("a", queue, "--gate");
        await using var b = await StartChildAsync("b", queue, "--gate");
        var sent = await SendAsync(transport, queue, Messages);

        // As in the in-process suite, each holds work before either completes any, so both provably take part (across
        // processes the SQLite write lock is not fair, and one busy process can keep the other from claiming for a while).
        await CompetingProcessesAssert.WaitUntilAsync(() => a.GatedCount > 0 && b.GatedCount > 0, "both processes hold a message", Deadline, a, b);
        await Task.WhenAll(a.OpenGateAsync(), b.OpenGateAsync());
        await CompetingProcessesAssert.WaitUntilAllCompletedAsync(sent, Deadline, a, b);
        await Task.WhenAll(a.StopAsync(), b.StopAsync());

        output.WriteLine(a.Describe() + b.Describe());
        CompetingProcessesAssert.EachCompletedOnceByOneProcess(sent, a, b);
    }

    [Fact]
    public async Task ProcessKilledMidFlow_ItsLeasedMessagesComeBackWhenTheLeaseRunsOut_AndOnlyItsUnackedWorkRepeats()
    {
        const string queue = "killed";
        await using var transport = await SqliteQueueTransportFactory.OpenAsync(_database.Path);
        await transport.DeclareQueueAsync(queue);

        // The process to kill consumes first, alone (however the two would share the queue, it gets this far): after
        // KilledAfter completions it completes one message in each handler and withholds the ack, so it holds those and
        // the ones it prefetched under a 3 s lease that it renews while it lives and that nothing releases once it is dead.
        await using var killed = await StartChildAsync("killed", queue, "--lease-ms", "3000", "--hold-after", Number(KilledAfter));
        var sent = await SendAsync(transport, queue, FirstBatch);
        await CompetingProcessesAssert.WaitUntilAsync(() => killed.Holding.Count == Concurrency, "the process to kill holds a message in each handler", Deadline, killed);

        // The survivor (default 30 s lease) starts on the rest of the queue and more arrives; then the other is killed.
        await using var survivor = await StartChildAsync("survivor", queue);
        sent.AddRange(await SendAsync(transport, queue, Messages - FirstBatch));
        await killed.KillAsync();

        await CompetingProcessesAssert.WaitUntilAllCompletedAsync(sent, Deadline, survivor, killed);
        await survivor.StopAsync();
        output.WriteLine(survivor.Describe() + killed.Describe());

        // An ack returns once the row is deleted, so only what the killed process completed without its ack returning
        // (exactly the held messages here) may be completed twice.
        CompetingProcessesAssert.OnlyTheKilledProcessesUnackedWorkRepeats(sent, survivor, killed, acksConfirmed: true);
    }

    // Both poll every 100 ms, so an expired lease is noticed soon even once the queue runs dry.
    private Task<ConsumerChildProcess> StartChildAsync(string name, string queue, params string[] options) =>
        ConsumerChildProcess.StartAsync(name, "sqlite", _database.Path, queue, ["--concurrency", Number(Concurrency), "--poll-ms", "100", .. options]);

    private static async Task<List<Guid>> SendAsync(ITransport transport, string queue, int count)
    {
        var envelopes = Enumerable.Range(0, count).Select(NewEnvelope).ToList();
        await Parallel.ForEachAsync(envelopes, new ParallelOptions { MaxDegreeOfParallelism = 8 }, (e, ct) => transport.SendAsync(queue, e, cancellationToken: ct));
        return [.. envelopes.Select(e => e.MessageId)];
    }

    private static Envelope NewEnvelope(int n) => new()
    {
        MessageId = Guid.CreateVersion7(),
        MessageType = "competing-processes",
        Time = DateTimeOffset.UtcNow,
        Body = Encoding.UTF8.GetBytes($"{{\"n\":{n}}}"),
    };

    private static string Number(int n) => n.ToString(CultureInfo.InvariantCulture);
}
