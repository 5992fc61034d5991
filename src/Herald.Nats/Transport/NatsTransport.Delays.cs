using System.Globalization;
using NATS.Client.Core;
using NATS.Client.JetStream;
using NATS.Client.JetStream.Models;

namespace Herald.Nats.Transport;

/// <summary>
/// Delayed sends: stored in the queue's delay stream, not the queue's, until due (<see cref="NatsDelayMover"/>): a
/// nak of an early message on the queue's consumer would count as a delivery there, use up one of <c>MaxDeliver</c>
/// and be read as an attempt. A delayed publish to a topic mapped to a declared stream waits in the topic's delay stream
/// the same way, moved to the topic's subject by the processes consuming a queue whose filter takes it.
/// </summary>
internal sealed partial class NatsTransport
{
    /// <summary>The subject a delayed send to the queue is published to, once its delay stream is made.</summary>
    private async ValueTask<string> DelaySubjectAsync(string queue, CancellationToken cancellationToken)
    {
        await EnsureStreamAsync(DelayStream(Names.DelayStream(queue), Names.DelaySubject(queue)), cancellationToken).ConfigureAwait(false);
        return Names.DelaySubject(queue);
    }

    /// <summary>The subject a delayed publish to a mapped topic is published to, once its delay stream is made.</summary>
    private async ValueTask<string> TopicDelaySubjectAsync(string topic, CancellationToken cancellationToken)
    {
        await EnsureStreamAsync(DelayStream(Names.TopicDelayStream(topic), Names.TopicDelaySubject(topic)), cancellationToken).ConfigureAwait(false);
        return Names.TopicDelaySubject(topic);
    }

    /// <summary>
    /// A delay stream: a work queue (a message is removed once moved) with the <c>QueueStream</c> storage, replicas and
    /// size limits, but no <c>MaxAge</c>, which a long delay would outlive.
    /// </summary>
    private NatsStreamOptions DelayStream(string name, string subject)
    {
        var stream = _options.QueueStream.For(name, subject);
        stream.Retention = NatsRetention.WorkQueue;
        stream.MaxAge = null;
        return stream;
    }

    /// <summary>
    /// What a process consuming the queue moves when due: the queue's delay stream, and for a queue on a declared stream
    /// the delay stream of every mapped topic its filter takes (no other process may be there to move them).
    /// </summary>
    private async Task<NatsDelayLine[]> EnsureDelayLinesAsync(string queue, QueueTarget target, CancellationToken cancellationToken)
    {
        var lines = new List<NatsDelayLine>
        {
            await EnsureDelayLineAsync(Names.DelayStream(queue), Names.DelaySubject(queue), target.Subject, target.Stream, queue, cancellationToken).ConfigureAwait(false),
        };
        if (target.FilterSubject is { } filter)
        {
            foreach (var (topic, subject) in _options.Topics)
            {
                if (NatsNames.Matches(filter, subject))
                {
                    lines.Add(await EnsureDelayLineAsync(Names.TopicDelayStream(topic), Names.TopicDelaySubject(topic), subject, target.Stream, topic, cancellationToken).ConfigureAwait(false));
                }
            }
        }

        return [.. lines];
    }

    /// <summary>A delay stream and its durable consumer, made sure of when a process starts consuming a queue it moves to.</summary>
    private async Task<NatsDelayLine> EnsureDelayLineAsync(string stream, string delaySubject, string subject, string targetStream, string name, CancellationToken cancellationToken)
    {
        await EnsureStreamAsync(DelayStream(stream, delaySubject), cancellationToken).ConfigureAwait(false);
        try
        {
            var durable = await JetStream.GetConsumerAsync(stream, NatsNames.DelayDurable, cancellationToken).ConfigureAwait(false);
            return new NatsDelayLine(durable, stream, delaySubject, subject, targetStream, name);
        }
        catch (NatsJSApiException e) when (e.Error.ErrCode == NatsTopology.ConsumerNotFound)
        {
        }

        // A move repeated after its ack wait must still fall in the target stream's duplicate window to be dropped.
        var window = (await JetStream.GetStreamAsync(targetStream, cancellationToken: cancellationToken).ConfigureAwait(false)).Info.Config.DuplicateWindow;
        var created = await JetStream.CreateOrUpdateConsumerAsync(stream, NatsTopology.DelayDurableConfig(window), cancellationToken).ConfigureAwait(false);
        return new NatsDelayLine(created, stream, delaySubject, subject, targetStream, name);
    }

    /// <summary>Makes a delay stream and its durable consumer again, after the mover's pull found them gone (deleted behind this process's back).</summary>
    internal async Task<INatsJSConsumer> RemakeDelayLineAsync(NatsDelayLine line, CancellationToken cancellationToken)
    {
        ForgetStreamOf(line.DelaySubject);
        var remade = await EnsureDelayLineAsync(line.Stream, line.DelaySubject, line.Subject, line.TargetStream, line.Name, cancellationToken).ConfigureAwait(false);
        return remade.Durable;
    }

    /// <summary>
    /// Puts a message a stop took on its last delivery back as a new message, carrying <paramref name="attemptsBefore"/>; the
    /// caller acks the original. One of the queue's own stream goes back in it (to <paramref name="target"/>'s subject); a
    /// mapped queue's goes to the queue's delay stream instead, marked with the subject it had, for the queue's consumers
    /// to take from there (a copy to its subject would also reach every other queue whose filter takes it). Its
    /// <c>Nats-Msg-Id</c> is the stream and sequence it came from, so a put-back repeated (the ack lost) is stored once.
    /// </summary>
    internal ValueTask PutBackAsync(string queue, QueueTarget target, INatsJSMsg<byte[]> message, ulong sequence, int attemptsBefore, CancellationToken cancellationToken)
    {
        var id = string.Create(CultureInfo.InvariantCulture, $"{target.Stream}:{sequence}:put-back");
        var headers = NatsDelayMover.ForQueue(message.Headers);
        headers[NatsEnvelopeCodec.AttemptsBeforeHeader] = attemptsBefore.ToString(CultureInfo.InvariantCulture);
        if (target.FilterSubject is null)
        {
            return PublishRawAsync(target.Subject, message.Data ?? [], headers, id, cancellationToken);
        }

        headers[NatsEnvelopeCodec.PutBackSubjectHeader] = message.Subject;
        return PublishRawAsync(Names.DelaySubject(queue), message.Data ?? [], headers, id, cancellationToken);
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
        var headers = NatsDelayMover.ForQueue(message.Headers, keepDueTime: true);
        return PublishRawAsync(Names.DelaySubject(queue), message.Data ?? [], headers, id, cancellationToken);
    }
}
