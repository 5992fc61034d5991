using Herald.AmazonSqs.Transport;
using Herald.Conformance.Transport.Processes;
using Herald.Processes;
using Herald.Transport;
using Xunit.Abstractions;

namespace Herald.AmazonSqs.Tests;

/// <summary>Two consumer processes, each with an SQS client of its own, on one queue of the emulator (issue 13).</summary>
public sealed class CompetingProcessesTests(ITestOutputHelper output) : CompetingProcessesConformance(output)
{
    private readonly string _prefix = $"herald-cp-{Guid.NewGuid():N}"[..24];

    // The emulator takes every receive in one Node thread: fewer messages than the suite's default keep the run short.
    protected override int Messages => 800;

    // A delete returns once SQS applied it: a completion whose ack returned is never repeated.
    protected override bool AcksConfirmed => true;

    // What the killed process held comes back when its visibility timeout ends (SQS has no connection to notice a death by).
    protected override IReadOnlyList<string> KilledProcessOptions => ["--lease-ms", "3000"];

    public override Task DisposeAsync() => SqsEmulator.DeleteQueuesAsync([_prefix]);

    protected override string QueueName(string what) => $"{_prefix}-{what}";

    protected override async Task<ITransport> CreateSenderAsync() => await AmazonSqsTransportFactory.CreateAsync(SqsEmulator.Options());

    protected override Task<ConsumerChildProcess> StartChildAsync(string name, string queue, IReadOnlyList<string> options) =>
        ConsumerChildProcess.StartAsync(name, "sqs", SqsEmulator.ServiceUrl, queue, ["--concurrency", Number(Concurrency), .. options]);
}
