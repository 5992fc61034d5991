using System.Globalization;
using System.Runtime.ExceptionServices;
using Herald.Internal;
using Herald.Transport;
using NATS.Client.JetStream;
using NATS.Client.JetStream.Models;

namespace Herald.Nats.Transport;

internal sealed partial class NatsTransport
{
    /// <summary>
    /// Moves the messages of the queue that reached the consumer's most deliveries unsettled (their max-deliveries
    /// advisories, below), then reads the queue's dead letters (subject <c>{prefix}.dead-letter.{queue}</c> of the dead-letter stream, a work queue)
    /// through a durable consumer of their own, hands each on and acks it (removing it) only after that returned. One it
    /// fails on is held unacked while the drain goes on with the rest (so it does not hold back those behind it), and
    /// handed back (nak) at the end.
    /// </summary>
    protected override async ValueTask<int> DrainDeadLettersCoreAsync(string queue, Func<NativeDeadLetter, CancellationToken, ValueTask> moveAsync, CancellationToken cancellationToken)
    {
        // A refusal among the first does not keep the drain from the second; the first refusal is thrown at the end.
        ExceptionDispatchInfo? refused = null;
        var moved = 0;
        try
        {
            moved = await DrainMaxDeliveriesAsync(queue, moveAsync, cancellationToken).ConfigureAwait(false);
        }
        catch (Exception e) when (!cancellationToken.IsCancellationRequested)
        {
            refused = ExceptionDispatchInfo.Capture(e);
        }

        moved += await DrainDeadLetterStreamAsync(queue, moveAsync, cancellationToken).ConfigureAwait(false);
        refused?.Throw();
        return moved;
    }

    private async ValueTask<int> DrainDeadLetterStreamAsync(string queue, Func<NativeDeadLetter, CancellationToken, ValueTask> moveAsync, CancellationToken cancellationToken)
    {
        INatsJSConsumer consumer;
        try
        {
            // No dead-letter stream yet: nothing was ever dead-lettered, and the drain makes none.
            await JetStream.GetStreamAsync(Names.DeadLetterStream, cancellationToken: cancellationToken).ConfigureAwait(false);
            consumer = await JetStream.CreateOrUpdateConsumerAsync(Names.DeadLetterStream, new ConsumerConfig(NatsNames.DeadLetterDurable(queue))
            {
                AckPolicy = ConsumerConfigAckPolicy.Explicit,
                FilterSubject = Names.DeadLetterSubject(queue),
                AckWait = _options.AckWait,
            }, cancellationToken).ConfigureAwait(false);
        }
        catch (NatsJSApiException e) when (e.Error.ErrCode == NatsTopology.StreamNotFound)
        {
            return 0;
        }

        var rawType = (_options.RawQueues.TryGetValue(queue, out var raw) ? raw : null);
        var moved = 0;
        var held = new HeldDeadLetters();
        try
        {
            while (true)
            {
                var fetched = 0;
                await foreach (var message in consumer.FetchNoWaitAsync<byte[]>(new NatsJSFetchOpts { MaxMsgs = 100 }, cancellationToken: cancellationToken).ConfigureAwait(false))
                {
                    fetched++;

                    // The copy's own dedup id (PublishDeadLetterAsync), not the message's: decoded as the message was.
                    message.Headers?.Remove(NatsEnvelopeCodec.MessageIdHeader);
                    var envelope = NatsEnvelopeCodec.Decode(
                        message.Headers, message.Data ?? [], 1, message.Metadata?.Timestamp ?? TimeProvider.GetUtcNow(), rawType, _options.Source, TimeProvider, out var failure);
                    var deadLetter = new NativeDeadLetter
                    {
                        Envelope = envelope with { DeliveryAttempt = NatsEnvelopeCodec.DeadLetteredAttempt(message.Headers) },
                        Queue = queue,
                        Time = message.Metadata?.Timestamp,
                        DecodeFailure = failure,

                        // Its place in the stream (and time, as a stream made anew numbers from 1 again).
                        NativeId = message.Metadata is { } metadata
                            ? string.Create(CultureInfo.InvariantCulture, $"{Names.DeadLetterStream}/{metadata.Sequence.Stream}/{metadata.Timestamp.UtcTicks}")
                            : null,
                    };
                    if (!await held.TryMoveAsync(message, deadLetter, moveAsync, cancellationToken).ConfigureAwait(false))
                    {
                        continue;
                    }

                    // Double ack: removed from the work queue before the next is read, so a drain that stops here moves it once.
                    await message.AckAsync(new AckOpts { DoubleAck = true }, cancellationToken).ConfigureAwait(false);
                    moved++;
                }

                if (fetched == 0)
                {
                    held.ThrowIfRefused();
                    return moved;
                }
            }
        }
        finally
        {
            await held.NakAsync().ConfigureAwait(false);
        }
    }

    /// <summary>
    /// The messages a drain holds unacked because moving their dead letter failed, so later ones are moved meanwhile (a nak
    /// would hand the same one back at once); naked when the drain ends, and the first failure thrown then.
    /// </summary>
    private sealed class HeldDeadLetters
    {
        private readonly List<INatsJSMsg<byte[]>> _messages = [];
        private readonly DeadLetterDrainRound _round = new();

        /// <summary>Moves the dead letter; false when that failed and <paramref name="message"/> is held (held too when cancellation stops the drain).</summary>
        public async ValueTask<bool> TryMoveAsync(INatsJSMsg<byte[]> message, NativeDeadLetter deadLetter, Func<NativeDeadLetter, CancellationToken, ValueTask> moveAsync, CancellationToken cancellationToken)
        {
            var moved = false;
            try
            {
                moved = await _round.TryMoveAsync(moveAsync, deadLetter, cancellationToken).ConfigureAwait(false);
                return moved;
            }
            finally
            {
                if (!moved)
                {
                    _messages.Add(message);
                }
            }
        }

        public void ThrowIfRefused() => _round.ThrowIfAnyFailed();

        public async ValueTask NakAsync()
        {
            foreach (var message in _messages)
            {
                await message.NakAsync(cancellationToken: CancellationToken.None).ConfigureAwait(false);
            }
        }
    }

    /// <summary>
    /// Stores a copy of a delivered message in the queue's dead letters, its headers kept, with the reason and the failed
    /// attempt. The copy's <c>Nats-Msg-Id</c> is the queue and the message's place in its stream: a copy stored again (its
    /// publish retried after a lost answer, or the message delivered again after its ack was lost) is dropped by the
    /// dead-letter stream's duplicate window, while a later dead letter of the same message sent again (a new place) is kept.
    /// </summary>
    internal async ValueTask PublishDeadLetterAsync(
        string queue, INatsJSMsg<byte[]> message, int attempt, string reason, IReadOnlyDictionary<string, string>? added, CancellationToken cancellationToken)
    {
        var stream = new NatsStreamOptions { Name = Names.DeadLetterStream, Retention = NatsRetention.WorkQueue, Storage = NatsStorage.File, Replicas = _options.QueueStream.Replicas };
        stream.Subjects.Add(Names.DeadLetterSubjects);
        await EnsureStreamAsync(stream, cancellationToken).ConfigureAwait(false);
        var headers = NatsEnvelopeCodec.ForDeadLetter(message.Headers, attempt, reason, queue, added);

        // The time as well as the sequence: a stream made again (deleted behind Herald's back) numbers from 1 again.
        var id = NatsAckReply.TryParse(message.ReplyTo, out var reply)
            ? string.Create(CultureInfo.InvariantCulture, $"{queue}:{reply.StreamSequence}:{reply.Timestamp.ToUnixTimeMilliseconds()}")
            : null;
        await PublishRawAsync(Names.DeadLetterSubject(queue), message.Data ?? [], headers, id, cancellationToken).ConfigureAwait(false);
    }
}
