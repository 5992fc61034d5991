using System.Globalization;
using NATS.Client.Core;
using NATS.Client.JetStream;
using NATS.Client.JetStream.Models;

namespace Herald.Nats.Transport;

/// <summary>
/// Delayed sends: stored in the queue's delay stream, not the queue's, until due (<see cref="NatsDelayMover"/>): a
/// nak of an early message on the queue's consumer would count as a delivery there, use up one of <c>MaxDeliver</c>
/// and be read as an attempt.
/// </summary>
internal sealed partial class NatsTransport
{
    /// <summary>The subject a delayed send to the queue is published to, once its delay stream is made.</summary>
    private async ValueTask<string> DelaySubjectAsync(string queue, CancellationToken cancellationToken)
    {
        await EnsureStreamAsync(DelayStream(queue), cancellationToken).ConfigureAwait(false);
        return Names.DelaySubject(queue);
    }

    /// <summary>
    /// The queue's delay stream: a work queue (a message is removed once moved) with the <c>QueueStream</c> storage,
    /// replicas and size limits, but no <c>MaxAge</c>, which a long delay would outlive.
    /// </summary>
    private NatsStreamOptions DelayStream(string queue)
    {
        var stream = _options.QueueStream.For(Names.DelayStream(queue), Names.DelaySubject(queue));
        stream.Retention = NatsRetention.WorkQueue;
        stream.MaxAge = null;
        return stream;
    }

    /// <summary>The delay stream and its durable consumer, made sure of when a process starts consuming the queue.</summary>
    private async Task<INatsJSConsumer> EnsureDelayDurableAsync(string queue, QueueTarget target, CancellationToken cancellationToken)
    {
        var stream = Names.DelayStream(queue);
        await EnsureStreamAsync(DelayStream(queue), cancellationToken).ConfigureAwait(false);
        try
        {
            return await JetStream.GetConsumerAsync(stream, NatsNames.DelayDurable, cancellationToken).ConfigureAwait(false);
        }
        catch (NatsJSApiException e) when (e.Error.ErrCode == NatsTopology.ConsumerNotFound)
        {
        }

        // A move repeated after its ack wait must still fall in the queue stream's duplicate window to be dropped.
        var window = (await JetStream.GetStreamAsync(target.Stream, cancellationToken: cancellationToken).ConfigureAwait(false)).Info.Config.DuplicateWindow;
        return await JetStream.CreateOrUpdateConsumerAsync(stream, NatsTopology.DelayDurableConfig(window), cancellationToken).ConfigureAwait(false);
    }

    /// <summary>
    /// Hands an early message of the queue's own stream (sent with a delay by an earlier Herald, or published with a delay
    /// to a bound topic and copied in) to the queue's delay stream; the caller acks it. Its <c>Nats-Msg-Id</c> is the queue
    /// stream and sequence it came from: a hand-over repeated (the ack lost) is stored once, and the move back is not
    /// taken for the copy the queue stream already stored under the message id.
    /// </summary>
    internal ValueTask HandOverToDelayStreamAsync(string queue, INatsJSMsg<byte[]> message, ulong sequence, CancellationToken cancellationToken)
    {
        var id = string.Create(CultureInfo.InvariantCulture, $"{Names.QueueStream(queue)}:{sequence}");

        // The due time stays: the mover reads it. The server's own headers (Nats-Stream-Source of a copy) do not.
        var headers = NatsDelayMover.ForQueue(message.Headers);
        if (message.Headers is { } original && original.TryGetValue(NatsEnvelopeCodec.NotBeforeHeader, out var due))
        {
            headers[NatsEnvelopeCodec.NotBeforeHeader] = due;
        }

        return PublishRawAsync(Names.DelaySubject(queue), message.Data ?? [], headers, id, cancellationToken);
    }
}
