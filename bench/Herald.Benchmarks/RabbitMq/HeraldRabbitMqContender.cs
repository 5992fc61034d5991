using Herald.RabbitMQ.Transport;
using Herald.RabbitMQ;
using Herald.Transport;

namespace Herald.Benchmarks.RabbitMq;

/// <summary>Herald.RabbitMQ through the ITransport port (see <see cref="TransportContender"/>).</summary>
/// <param name="ackEach">Turn ack coalescing off (AckBatchSize = 1): every delivery acked on its own, as the raw baseline does.</param>
internal sealed class HeraldRabbitMqContender(Uri broker, bool ackEach) : TransportContender
{
    /// <summary>The name of the contender acking each delivery on its own.</summary>
    public const string AckPerMessage = "Herald (ack per message)";

    /// <summary>The name of the contender with Herald's default, coalesced acks.</summary>
    public const string CoalescedAcks = "Herald (coalesced acks)";

    public override string Name => ackEach ? AckPerMessage : CoalescedAcks;

    public override string Setup =>
        $"`RabbitMqTransportFactory.CreateAsync` defaults (publisher confirms on, {new RabbitMqTransportOptions().PublisherChannels} publisher channels, classic durable queues, persistent messages); " +
        $"`SendAsync` of an `Envelope` (Guid v7 id, 300-byte body); `ConsumeAsync` with `Prefetch = {BrokerWorkload.Prefetch}, MaxConcurrency = {BrokerWorkload.ConsumerConcurrency}`, a handler that deserializes the body to the message type, then `AckAsync`" +
        (ackEach ? "; `AckBatchSize = 1`: each ack sent on its own as it is made" : $"; acks coalesced, the default (up to {BrokerWorkload.Prefetch / 4} handled deliveries or 2 ms share one `basic.ack multiple=true`)");

    protected override Task<ITransport> CreateAsync(CancellationToken cancellationToken) =>
        RabbitMqTransportFactory.CreateAsync(new RabbitMqTransportOptions { ConnectionUri = broker, ClientProvidedName = "herald-bench", AckBatchSize = ackEach ? 1 : null }, cancellationToken: cancellationToken);
}
