using System.Globalization;
using System.Text;
using Herald.Messages;
using Herald.Postgres.Transport;
using Herald.Transport;
using Herald.Transport.ConsumerChild;
using Xunit.Abstractions;

namespace Herald.Postgres.Tests.Transport;

/// <summary>
/// Issue 5: "two consumer processes on one queue never both complete the same message", with real processes: two
/// Herald.Transport.ConsumerChild processes consume one queue of a fresh schema while this test sends to it.
/// </summary>
public sealed class CompetingProcessesTests(ITestOutputHelper output)
{
    private const int Messages = 2_000;
    private const int FirstBatch = 300;
    private const int KilledAfter = 200;
    private const int Concurrency = 2;
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(60);

    [Fact]
    public async Task TwoProcesses_OnOneQueue_NeverBothCompleteAMessage_AndBothDoWork()
    {
        const string queue = "competing";
        await using var schema = new TemporarySchema();
        await using var transport = await OpenAsync(schema);
        await transport.DeclareQueueAsync(queue);
        await using var a = await StartChildAsync("a", schema, queue, "--gate");
        await using var b = await StartChildAsync("b", schema, queue, "--gate");
        var sent = await SendAsync(transport, queue, Messages);

        // As in the in-process suite, each holds work before either completes any, so both provably take part.
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
        await using var schema = new TemporarySchema();
        await using var transport = await OpenAsync(schema);
        await transport.DeclareQueueAsync(queue);

        // The process to kill consumes first, alone: after KilledAfter completions it completes one message in each handler
        // and withholds the ack, so it holds those and the ones it prefetched under a 3 s lease that it renews while it
        // lives and that nothing releases once it is dead.
        await using var killed = await StartChildAsync("killed", schema, queue, "--lease-ms", "3000", "--hold-after", Number(KilledAfter));
        var sent = await SendAsync(transport, queue, FirstBatch);
        await CompetingProcessesAssert.WaitUntilAsync(() => killed.Holding.Count == Concurrency, "the process to kill holds a message in each handler", Deadline, killed);

        // The survivor (default 30 s lease) starts on the rest of the queue and more arrives; then the other is killed.
        await using var survivor = await StartChildAsync("survivor", schema, queue);
        sent.AddRange(await SendAsync(transport, queue, Messages - FirstBatch));
        await killed.KillAsync();

        await CompetingProcessesAssert.WaitUntilAllCompletedAsync(sent, Deadline, survivor, killed);
        await survivor.StopAsync();
        output.WriteLine(survivor.Describe() + killed.Describe());

        // An ack returns once its DELETE committed, so only what the killed process completed without its ack returning
        // (exactly the held messages here) may be completed twice.
        CompetingProcessesAssert.OnlyTheKilledProcessesUnackedWorkRepeats(sent, survivor, killed, acksConfirmed: true);
    }

    private static Task<ITransport> OpenAsync(TemporarySchema schema) =>
        PostgresQueueTransportFactory.CreateAsync(PostgresTestDatabase.ConnectionString, o => o.Schema = schema.Name);

    // Sends wake consumers through NOTIFY, but nothing announces an expired lease: both poll every 100 ms, so the survivor
    // notices one soon even once the queue runs dry.
    private static Task<ConsumerChildProcess> StartChildAsync(string name, TemporarySchema schema, string queue, params string[] options) =>
        ConsumerChildProcess.StartAsync(
            name, "postgres", PostgresTestDatabase.ConnectionString, queue,
            ["--schema", schema.Name, "--concurrency", Number(Concurrency), "--poll-ms", "100", .. options]);

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
