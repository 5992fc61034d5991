using System.Collections.Concurrent;
using Herald.AmazonSqs.Transport;
using Herald.Conformance.Transport;
using Herald.Transport;
using Xunit.Abstractions;

namespace Herald.AmazonSqs.Tests;

/// <summary>
/// Runs the transport conformance suite against the SQS emulator on standard queues. Every queue and topic a test names is
/// deleted afterwards, with its dead-letter queue and topic registry. Where SQS differs, the capability flags say so
/// (AmazonSqsTransport: no order per key is promised).
/// </summary>
public sealed class SqsTransportConformanceTests(ITestOutputHelper output) : TransportConformance(output)
{
    private readonly ConcurrentDictionary<string, byte> _names = new(StringComparer.Ordinal);

    // A long poll is never cut off at a stop (docs/sqs.md): it can still take the next messages sent (up to ten, one
    // ReceiveMessage), which the stopped consumer hands back, and SQS counts that receive as a delivery.
    protected override int PipelineModelLateReceiveAfterStop => 10;

    protected override async Task<ITransport> CreateTransportAsync() =>
        new NameTrackingTransport(await AmazonSqsTransportFactory.CreateAsync(SqsEmulator.Options()), _names);

    public override async Task DisposeAsync()
    {
        await base.DisposeAsync();
        await SqsEmulator.DeleteQueuesAsync(_names.Keys);
    }
}
