using Herald.Handling;
using Herald.Internal;

namespace Herald.Streams.Hosting;

/// <summary>
/// Feeds messages the endpoint consumed to the streams whose source is <see cref="StreamSource.Transport"/>: keyed by the
/// envelope's partition key (else its message id), at the envelope's time, committed in the handler's unit of work. From a
/// key-partitioned broker (Kafka) the state is that of the broker partition the message came from.
/// </summary>
internal sealed class StreamTransportHandler<TMessage>(StreamProcessors processors) : IMessageHandler<TMessage>
    where TMessage : notnull
{
    public async ValueTask HandleAsync(TMessage message, MessageContext context, CancellationToken cancellationToken)
    {
        var envelope = context.Envelope;
        var key = envelope.PartitionKey ?? envelope.MessageId.ToString();
        var from = BrokerPartitions.Of(context);
        foreach (var processor in processors.ReadingTransport(typeof(TMessage)))
        {
            await processor.ProcessFromAsync(message, key, envelope.Time, from, context.Endpoint, cancellationToken).ConfigureAwait(false);
        }
    }
}
