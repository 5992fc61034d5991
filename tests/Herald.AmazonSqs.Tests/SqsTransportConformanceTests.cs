using System.Collections.Concurrent;
using Herald.AmazonSqs.Transport;
using Herald.Conformance.Transport;
using Herald.Messages;
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

    protected override async Task<ITransport> CreateTransportAsync() =>
        new NameTrackingTransport(await AmazonSqsTransportFactory.CreateAsync(SqsEmulator.Options()), _names);

    public override async Task DisposeAsync()
    {
        await base.DisposeAsync();
        await SqsEmulator.DeleteQueuesAsync(_names.Keys);
    }

    /// <summary>Passes every call on, remembering the queue and topic names used so the test can delete them.</summary>
    internal sealed class NameTrackingTransport(ITransport inner, ConcurrentDictionary<string, byte> names) : ITransport
    {
        public ITransport Inner => inner;

        public string Name => inner.Name;

        public TransportCapabilities Capabilities => inner.Capabilities;

        public ValueTask DeclareQueueAsync(string queue, CancellationToken cancellationToken = default) =>
            inner.DeclareQueueAsync(Track(queue), cancellationToken);

        public ValueTask BindAsync(string topic, string queue, CancellationToken cancellationToken = default) =>
            inner.BindAsync(Track(topic), Track(queue), cancellationToken);

        public ValueTask SendAsync(string queue, Envelope envelope, SendOptions? options = null, CancellationToken cancellationToken = default) =>
            inner.SendAsync(Track(queue), envelope, options, cancellationToken);

        public ValueTask PublishAsync(string topic, Envelope envelope, SendOptions? options = null, CancellationToken cancellationToken = default) =>
            inner.PublishAsync(Track(topic), envelope, options, cancellationToken);

        public ValueTask<ITransportConsumer> ConsumeAsync(string queue, ConsumerOptions options, DeliveryHandler handler, CancellationToken cancellationToken = default) =>
            inner.ConsumeAsync(Track(queue), options, handler, cancellationToken);

        public ValueTask DisposeAsync() => inner.DisposeAsync();

        private string Track(string name)
        {
            names.TryAdd(name, 0);
            return name;
        }
    }
}
