using Herald.AmazonSqs.Transport;
using Herald.Benchmarks.RabbitMq;
using Herald.Transport;

namespace Herald.Benchmarks.AmazonSqs;

/// <summary>Herald.AmazonSqs through the ITransport port (see <see cref="TransportContender"/>); concurrent sends and deletes share batch calls.</summary>
internal sealed class HeraldSqsContender : TransportContender
{
    public const string ContenderName = "Herald";

    public override string Name => ContenderName;

    public override string Setup =>
        "`AmazonSqsTransportFactory.CreateAsync` defaults (standard queues, long polls of 20 s, visibility 30 s renewed while handled); " +
        $"`SendAsync` of an `Envelope` (Guid v7 id, 300-byte body; concurrent sends to one queue share `SendMessageBatch` calls); `ConsumeAsync` with `Prefetch = {BrokerWorkload.Prefetch}, MaxConcurrency = {BrokerWorkload.ConsumerConcurrency}`, a handler that deserializes the body, then `AckAsync` (deletes share `DeleteMessageBatch` calls)";

    protected override Task<ITransport> CreateAsync(CancellationToken cancellationToken) =>
        AmazonSqsTransportFactory.CreateAsync(SqsBench.HeraldOptions(), cancellationToken: cancellationToken);
}
