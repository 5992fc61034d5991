using Herald.Processes;
using System.Globalization;
using System.Text;
using Herald.Messages;
using Herald.Transport;
using Xunit;
using Xunit.Abstractions;

namespace Herald.Conformance.Transport.Processes;

/// <summary>
/// Issue 5, "two consumer processes on one queue never both complete the same message", with real processes: two
/// Herald.Transport.ConsumerChild processes consume one queue while the test sends to it, and one of them is killed
/// with SIGKILL mid-flow. A transport's test project derives from this with its own sender and child arguments.
/// </summary>
public abstract class CompetingProcessesConformance(ITestOutputHelper output) : IAsyncLifetime
{
    /// <summary>Messages the first process completes before it withholds its acks, in the kill test.</summary>
    protected const int KilledAfter = 200;

    /// <summary>Handlers per child process.</summary>
    protected const int Concurrency = 2;

    private const int FirstBatch = 300;
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(60);

    /// <summary>Messages sent per test.</summary>
    protected virtual int Messages => 2_000;

    /// <summary>
    /// Whether an ack returns only once it is durable (a SQL queue's DELETE committed). If not (AMQP's <c>basic.ack</c>
    /// has no reply), any completion of a killed process may repeat, not only those whose ack had not returned.
    /// </summary>
    protected abstract bool AcksConfirmed { get; }

    /// <inheritdoc />
    public virtual Task InitializeAsync() => Task.CompletedTask;

    /// <inheritdoc />
    public virtual Task DisposeAsync() => Task.CompletedTask;

    [Fact]
    public async Task TwoProcesses_OnOneQueue_NeverBothCompleteAMessage_AndBothDoWork()
    {
        var queue = QueueName("competing");
        await using var transport = await CreateSenderAsync();
        await transport.DeclareQueueAsync(queue);
        await using var a = await StartChildAsync("a", queue, ["--gate"]);
        await using var b = await StartChildAsync("b", queue, ["--gate"]);
        var sent = await SendAsync(transport, queue, Messages);

        // As in the in-process suite, each holds work before either completes any, so both provably take part (one busy
        // process can otherwise keep the other from claiming for a while: the SQLite write lock is not fair).
        await CompetingProcessesAssert.WaitUntilAsync(() => a.GatedCount > 0 && b.GatedCount > 0, "both processes hold a message", Deadline, a, b);
        await Task.WhenAll(a.OpenGateAsync(), b.OpenGateAsync());
        await CompetingProcessesAssert.WaitUntilAllCompletedAsync(sent, Deadline, a, b);
        await Task.WhenAll(a.StopAsync(), b.StopAsync());

        output.WriteLine(a.Describe() + b.Describe());
        CompetingProcessesAssert.EachCompletedOnceByOneProcess(sent, a, b);
    }

    [Fact]
    public async Task ProcessKilledMidFlow_ItsUnsettledMessagesReachTheOther_AndOnlyItsUnackedWorkRepeats()
    {
        var queue = QueueName("killed");
        await using var transport = await CreateSenderAsync();
        await transport.DeclareQueueAsync(queue);

        // The process to kill consumes first, alone: after KilledAfter completions it completes one message in each
        // handler and withholds the ack, so it holds those and the ones prefetched to it until it dies (a lease that
        // nothing releases once it is dead, or deliveries the broker requeues when its connection drops).
        await using var killed = await StartChildAsync("killed", queue, ["--hold-after", Number(KilledAfter), .. KilledProcessOptions]);
        var sent = await SendAsync(transport, queue, FirstBatch);
        await CompetingProcessesAssert.WaitUntilAsync(() => killed.Holding.Count == Concurrency, "the process to kill holds a message in each handler", Deadline, killed);

        // The survivor starts on the rest of the queue and more arrives; then the other is killed.
        await using var survivor = await StartChildAsync("survivor", queue, []);
        sent.AddRange(await SendAsync(transport, queue, Messages - FirstBatch));
        await killed.KillAsync();

        await CompetingProcessesAssert.WaitUntilAllCompletedAsync(sent, Deadline, survivor, killed);

        // The killed process completed what it held (without acking it), so "all completed" can hold before those come
        // back: wait for the survivor to get them too, which takes a lease's length where leases free them.
        await CompetingProcessesAssert.WaitUntilAsync(
            () => killed.Holding.All(survivor.Completed.Contains),
            "the survivor completes every message the killed process held",
            Deadline,
            survivor,
            killed);
        await survivor.StopAsync();
        output.WriteLine(survivor.Describe() + killed.Describe());
        CompetingProcessesAssert.OnlyTheKilledProcessesUnackedWorkRepeats(sent, survivor, killed, AcksConfirmed);
    }

    /// <summary>Extra options for the process that gets killed (a short lease, so its messages come back soon).</summary>
    protected virtual IReadOnlyList<string> KilledProcessOptions => [];

    /// <summary>The queue name for a test; a transport on a shared broker makes it unique.</summary>
    protected virtual string QueueName(string what) => what;

    /// <summary>The transport the test sends with, on the store or broker the children consume from.</summary>
    protected abstract Task<ITransport> CreateSenderAsync();

    /// <summary>Starts a child consuming <paramref name="queue"/> with <see cref="Concurrency"/> handlers and these options.</summary>
    protected abstract Task<ConsumerChildProcess> StartChildAsync(string name, string queue, IReadOnlyList<string> options);

    /// <summary>The number as the child's command line takes it.</summary>
    protected static string Number(int n) => n.ToString(CultureInfo.InvariantCulture);

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
}
