using Herald.Internal;
using Herald.Transport;
using RabbitMQ.Client;
using RabbitMQ.Client.Exceptions;

namespace Herald.RabbitMQ.Transport;

internal sealed partial class RabbitMqTransport
{
    /// <summary>
    /// Reads the queue's dead-letter queue with basic.get on a channel of its own, hands each message on, and acks it only
    /// after that returned. One it fails on is held unacked while the drain goes on with the next (basic.get skips it), and
    /// handed back at the end (nack, requeue, to its place), so it does not hold back those behind it.
    /// </summary>
    protected override async ValueTask<int> DrainDeadLettersCoreAsync(string queue, Func<NativeDeadLetter, CancellationToken, ValueTask> moveAsync, CancellationToken cancellationToken)
    {
        var deadLetterQueue = _options.DeadLetterQueueName(queue);
        var channel = await _consumeConnection!.CreateChannelAsync(cancellationToken: cancellationToken).ConfigureAwait(false);
        await using (channel.ConfigureAwait(false))
        {
            try
            {
                // Passive: a queue that never dead-lettered anything has no dead-letter queue, and the drain makes none.
                await channel.QueueDeclarePassiveAsync(deadLetterQueue, cancellationToken).ConfigureAwait(false);
            }
            catch (OperationInterruptedException e) when (e.ShutdownReason?.ReplyCode == Constants.NotFound)
            {
                return 0;
            }

            var rawType = _rawQueues.GetValueOrDefault(queue);
            var moved = 0;
            var unacked = 0;
            var round = new DeadLetterDrainRound();
            try
            {
                while (await channel.BasicGetAsync(deadLetterQueue, autoAck: false, cancellationToken).ConfigureAwait(false) is { } message)
                {
                    // Unacked until acked below, so handed back by the nack in finally however this ends.
                    unacked++;
                    var properties = message.BasicProperties;
                    var envelope = AmqpEnvelopeCodec.Decode(properties, message.Body.ToArray(), message.Redelivered, rawType, _options.Source, TimeProvider, out var failure);
                    var deadLetter = new NativeDeadLetter
                    {
                        // The copy counts one more delivery than the one that failed; the record keeps the failed one.
                        Envelope = envelope with { DeliveryAttempt = AmqpEnvelopeCodec.DeadLetteredAttempt(properties) },
                        Queue = queue,
                        DecodeFailure = failure,
                    };

                    if (!await round.TryMoveAsync(moveAsync, deadLetter, cancellationToken).ConfigureAwait(false))
                    {
                        continue;
                    }

                    await channel.BasicAckAsync(message.DeliveryTag, multiple: false, cancellationToken).ConfigureAwait(false);
                    unacked--;
                    moved++;
                }
            }
            finally
            {
                // Delivery tag 0 with multiple: every delivery of this channel still unacked.
                if (unacked > 0)
                {
                    await channel.BasicNackAsync(0, multiple: true, requeue: true, CancellationToken.None).ConfigureAwait(false);
                }
            }

            round.ThrowIfAnyFailed();
            return moved;
        }
    }

    /// <inheritdoc />
    protected override void ValidateQueueName(string queue, string parameter) => ValidateName(queue, parameter);
}
