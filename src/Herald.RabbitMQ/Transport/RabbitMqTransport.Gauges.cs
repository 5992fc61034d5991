using RabbitMQ.Client;

namespace Herald.RabbitMQ.Transport;

/// <summary>What the queue gauges need of the transport: a ready count by passive declare.</summary>
internal sealed partial class RabbitMqTransport
{
    /// <summary>
    /// The queue's ready messages, by a passive declare on a channel of its own: a passive declare of a missing queue closes
    /// its channel, which must not be one that declares topology or publishes meanwhile.
    /// </summary>
    internal async Task<long> CountReadyAsync(string queue, CancellationToken cancellationToken)
    {
        await ConnectAsync(cancellationToken).ConfigureAwait(false);
        var channel = await _publishConnection!.CreateChannelAsync(cancellationToken: cancellationToken).ConfigureAwait(false);
        await using (channel.ConfigureAwait(false))
        {
            var declared = await channel.QueueDeclarePassiveAsync(queue, cancellationToken).ConfigureAwait(false);
            if (channel.IsOpen)
            {
                await channel.CloseAsync(cancellationToken).ConfigureAwait(false);
            }

            return declared.MessageCount;
        }
    }
}
