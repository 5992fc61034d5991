using System.Globalization;
using System.Text;
using Herald.Messages;
using Herald.Transport;
using Herald.Transport.ConsumerChild;
using Xunit.Abstractions;

namespace Herald.RabbitMQ.Tests;

/// <summary>
/// Issue 5: "two consumer processes on one queue never both complete the same message", with real processes: two
/// Herald.Transport.ConsumerChild processes, each with a connection of its own, consume one queue while this test sends to it.
/// </summary>
public sealed class CompetingProcessesTests(ITestOutputHelper output) : RabbitMqTestBase
{
    private const int Messages = 5_000;
    private const int FirstBatch = 300;
    private const int KilledAfter = 200;
    private const int Concurrency = 2;
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(60);

    [Fact]
    public async Task TwoProcesses_OnOneQueue_NeverBothCompleteAMessage_AndBothDoWork()
    {
        var queue = Name("competing");
        var transport = await CreateTransportAsync();
        await transport.DeclareQueueAsync(queue);
        await using var a = await StartChildAsync("a", queue, "--gate");
        await using var b = await StartChildAsync("b", queue, "--gate");
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
    public async Task ProcessKilledMidFlow_ItsUnackedDeliveriesAreRequeued_AndOnlyItsCompletionsRepeat()
    {
        var queue = Name("killed");
        var transport = await CreateTransportAsync();
        await transport.DeclareQueueAsync(queue);

        // The process to kill consumes first, alone: after KilledAfter completions it completes one message in each handler
        // and withholds the ack, so it holds those and the ones prefetched to it, unacked, until its connection drops.
        await using var killed = await StartChildAsync("killed", queue, "--hold-after", Number(KilledAfter));
        var sent = await SendAsync(transport, queue, FirstBatch);
        await CompetingProcessesAssert.WaitUntilAsync(() => killed.Holding.Count == Concurrency, "the process to kill holds a message in each handler", Deadline, killed);

        // The survivor starts on the rest of the queue and more arrives; then the other is killed, and the broker requeues
        // what it had not acked when the killed process's connection closes.
        await using var survivor = await StartChildAsync("survivor", queue);
        sent.AddRange(await SendAsync(transport, queue, Messages - FirstBatch));
        await killed.KillAsync();

        await CompetingProcessesAssert.WaitUntilAllCompletedAsync(sent, Deadline, survivor, killed);
        await survivor.StopAsync();
        output.WriteLine(survivor.Describe() + killed.Describe());

        // basic.ack has no reply, so even a returned ack may not have reached the broker before the kill: any completion of
        // the killed process may repeat (in practice, the held messages), and nothing else may.
        CompetingProcessesAssert.OnlyTheKilledProcessesUnackedWorkRepeats(sent, survivor, killed, acksConfirmed: false);
    }

    private static Task<ConsumerChildProcess> StartChildAsync(string name, string queue, params string[] options) =>
        ConsumerChildProcess.StartAsync(name, "rabbitmq", BrokerAdmin.AmqpUri.ToString(), queue, ["--concurrency", Number(Concurrency), .. options]);

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
