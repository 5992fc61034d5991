using System.Globalization;
using System.Text;
using Amazon.SQS;
using Amazon.SQS.Model;
using Herald.Internal;
using Herald.Messages;
using Herald.Transport;

namespace Herald.AmazonSqs.Transport;

/// <summary>
/// One consumer's hold on an SQS queue for the shared <see cref="LeasedQueueConsumer{TMessage}"/>: a claim is a long-poll
/// receive (the visibility timeout is the lease, the receipt handle its identity), a renewal one
/// <c>ChangeMessageVisibilityBatch</c> per ten held messages, an ack a (batched) delete, a nack a visibility change or a
/// re-sent copy, a dead letter a copy in the queue's dead-letter queue. A copy received before its due time (a delay longer
/// than SQS holds in one go) is held back again here and never handed out.
/// </summary>
internal sealed class SqsQueueBackend(AmazonSqsTransport transport, string queue, string queueUrl) : ILeasedQueueBackend<SqsMessage>
{
    private static readonly List<string> AllAttributes = ["All"];
    private static readonly List<string> SystemAttributes = [SqsEnvelopeCodec.ReceiveCount, SqsEnvelopeCodec.SentTimestamp];

    // A long poll returns as soon as a message arrives: nothing else wakes the fetch loop.
    private static readonly Task Never = new TaskCompletionSource().Task;

    private readonly TimeSpan _lease = transport.Options.VisibilityTimeout;
    private readonly int _leaseSeconds = (int)Math.Ceiling(transport.Options.VisibilityTimeout.TotalSeconds);

    // Rounded up, as the consumer polls again at once after a long poll: truncated, a WaitTime under a second was a short
    // poll, and an idle queue was received from in a loop, each call billed.
    private readonly int _waitSeconds = AmazonSqsTransport.Seconds(transport.Options.WaitTime);
    private readonly string? _rawType = transport.Options.RawQueues.TryGetValue(queue, out var raw) ? raw : null;

    // Everything claimed and not yet settled or handed back: what stopping hands back.
    private readonly System.Collections.Concurrent.ConcurrentDictionary<SqsMessage, byte> _held = new();

    /// <summary>How logs name this consumer.</summary>
    public string Name => $"SQS queue '{queue}'";

    public Task NextWakeUp() => Never;

    public async ValueTask<LeasedClaim<SqsMessage>> ClaimAsync(int max, CancellationToken cancellationToken)
    {
        // Not cancelled when the consumer stops: a long poll cut off client-side may still take messages on the server and
        // hide them for a visibility timeout with nobody to hand them to. A poll the consumer stopped waiting for hands back
        // whatever it brings, once it returns.
        var receiving = transport.Client.ReceiveMessageAsync(
            new ReceiveMessageRequest
            {
                QueueUrl = queueUrl,
                MaxNumberOfMessages = Math.Min(max, SqsBatcher<SqsMessage>.MaxBatch),
                WaitTimeSeconds = _waitSeconds,
                VisibilityTimeout = _leaseSeconds,
                MessageAttributeNames = AllAttributes,
                MessageSystemAttributeNames = SystemAttributes,
            },
            CancellationToken.None);
        ReceiveMessageResponse response;
        try
        {
            response = await receiving.WaitAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
        {
            _ = HandBackWhenReceivedAsync(receiving);
            throw;
        }
        catch (Exception e) when (transport.ForgetIfGone(queue, e))
        {
            // Deleted behind Herald's back: the next receive goes to the queue created again (when Herald owns the topology)
            // or looked up again, not to the stale URL forever. This claim still fails, and is logged as one.
            queueUrl = await transport.QueueUrlAsync(queue, cancellationToken).ConfigureAwait(false);
            throw;
        }

        // SQS starts a message's visibility when it hands the message out, as the poll returns, however long the poll waited
        // for it (counted from the call, a message arriving late in an idle poll looked nearly expired and was handed back);
        // the response's way back is within the third of the lease the consumer keeps in hand.
        var receivedAt = transport.Now();
        var messages = new List<SqsMessage>(response.Messages?.Count ?? 0);
        foreach (var received in response.Messages ?? [])
        {
            var now = transport.Now();
            var envelope = SqsEnvelopeCodec.Decode(received, _rawType, transport.Options.Source, now, out var carried, out var failure);
            if (failure is not null)
            {
                AdapterLog.Undecodable(transport.Logger, queue, failure.Message);
            }
            else if (carried.Due is { } due && due > now)
            {
                await HoldBackAsync(received, envelope, carried, due, now).ConfigureAwait(false);
                continue;
            }

            var message = new SqsMessage(envelope, received.ReceiptHandle, receivedAt, _lease, carried, failure);
            _held[message] = 0;
            messages.Add(message);
        }

        return new LeasedClaim<SqsMessage>(messages, receivedAt + _lease, NextVisibleAt: null);
    }

    private async Task HandBackWhenReceivedAsync(Task<ReceiveMessageResponse> receiving)
    {
        try
        {
            var response = await receiving.ConfigureAwait(false);
            await ChangeVisibilityToZeroAsync([.. (response.Messages ?? []).Select(m => m.ReceiptHandle)], CancellationToken.None).ConfigureAwait(false);
        }
#pragma warning disable CA1031 // Nobody waits for it: what it took comes back when its visibility timeout ends anyway.
        catch (Exception)
#pragma warning restore CA1031
        {
        }
    }

    public ValueTask<DateTimeOffset> RenewAsync(IReadOnlyCollection<SqsMessage> held, ICollection<SqsMessage> lost, CancellationToken cancellationToken)
    {
        // On the consumer's renewal thread, which blocks here: the SDK has only asynchronous calls, so the wait is bounded by
        // the client's timeout and a failure is tried again after a twelfth of the lease.
        var leaseUntil = transport.Now() + _lease;
        var byId = new Dictionary<string, SqsMessage>(StringComparer.Ordinal);
        foreach (var chunk in held.Chunk(SqsBatcher<SqsMessage>.MaxBatch))
        {
            byId.Clear();
            var entries = new List<ChangeMessageVisibilityBatchRequestEntry>(chunk.Length);
            for (var i = 0; i < chunk.Length; i++)
            {
                var id = i.ToString(System.Globalization.CultureInfo.InvariantCulture);
                byId[id] = chunk[i];
                entries.Add(new ChangeMessageVisibilityBatchRequestEntry { Id = id, ReceiptHandle = chunk[i].ReceiptHandle, VisibilityTimeout = _leaseSeconds });
            }

            var response = transport.Client.ChangeMessageVisibilityBatchAsync(
                new ChangeMessageVisibilityBatchRequest { QueueUrl = queueUrl, Entries = entries },
                cancellationToken).GetAwaiter().GetResult();
            foreach (var failed in response.Failed ?? [])
            {
                if (AmazonSqsTransport.IsLostReceipt(failed.Code) && byId.Remove(failed.Id, out var message))
                {
                    // No longer this consumer's to hand back.
                    _held.TryRemove(message, out _);
                    lost.Add(message);
                }
                else if (!AmazonSqsTransport.IsLostReceipt(failed.Code))
                {
                    throw new AmazonSQSException($"Extending the visibility of a message of '{queue}' failed: {failed.Code} {failed.Message}");
                }
            }

            foreach (var renewed in byId.Values)
            {
                renewed.VisibleUntil = leaseUntil.UtcTicks;
            }
        }

        // Forgets what this consumer gave up unsettled (a settlement skipped, or a start, once its visibility ran out): its
        // receipt may hold another consumer's delivery now, and nothing else would ever remove it.
        var now = transport.Now().UtcTicks;
        foreach (var (message, _) in _held)
        {
            if (message.VisibleUntil <= now)
            {
                _held.TryRemove(message, out _);
            }
        }

        return ValueTask.FromResult(leaseUntil);
    }

    public async ValueTask<bool> AckAsync(SqsMessage message, CancellationToken cancellationToken)
    {
        _held.TryRemove(message, out _);
        return await transport.DeleteAsync(queueUrl, message.ReceiptHandle).ConfigureAwait(false);
    }

    public async ValueTask<bool> NackAsync(SqsMessage message, TimeSpan delay, IReadOnlyDictionary<string, string>? headers, CancellationToken cancellationToken)
    {
        _held.TryRemove(message, out _);

        // Within what one visibility change can hold, and with the headers unchanged (or on a FIFO queue, where a copy would
        // lose its place in the group): the message itself comes back, counted by SQS's ApproximateReceiveCount.
        var visibilityLeft = AmazonSqsTransportOptions.MaxVisibility - (transport.Now() - message.ReceivedAt) - AmazonSqsTransport.VisibilityMargin;
        if ((headers is null || transport.Options.FifoQueues) && delay <= visibilityLeft)
        {
            return await transport.ChangeVisibilityAsync(queueUrl, message.ReceiptHandle, delay, cancellationToken).ConfigureAwait(false);
        }

        // Otherwise a copy carries the headers and the attempts so far, sent (with the delay, chained beyond SQS's limits)
        // before the message is deleted: at least once, never lost.
        try
        {
            return await ReplaceWithCopyAsync(message, queueUrl, WithHeaders(message.Envelope, headers), message.Envelope.DeliveryAttempt, delay, reason: null, cancellationToken).ConfigureAwait(false);
        }
        catch (MessageTooLargeException e)
        {
            // No room for the headers or the due time (refused before sending, every time): the message itself comes back
            // after the delay, as far as one visibility change holds it, rather than when its visibility runs out. A longer
            // delay is cut to that: nothing on the message itself (SQS changes none of its attributes) could say it is not due
            // when it comes back, so it is handed out then, its receive count one higher.
            if (delay > visibilityLeft)
            {
                Log.NackDelayCut(transport.Logger, e, message.Envelope.MessageId, queue, delay, visibilityLeft);
                return await transport.ChangeVisibilityAsync(queueUrl, message.ReceiptHandle, visibilityLeft, cancellationToken).ConfigureAwait(false);
            }

            Log.NackCopyTooLarge(transport.Logger, e, message.Envelope.MessageId, queue, delay);
            return await transport.ChangeVisibilityAsync(queueUrl, message.ReceiptHandle, delay, cancellationToken).ConfigureAwait(false);
        }
    }

    public async ValueTask<bool> DeadLetterAsync(SqsMessage message, string reason, IReadOnlyDictionary<string, string>? headers, CancellationToken cancellationToken)
    {
        _held.TryRemove(message, out _);
        var deadLetterUrl = await transport.DeadLetterQueueUrlAsync(queue, cancellationToken).ConfigureAwait(false);
        var copy = WithHeaders(message.Envelope, headers);
        var copyReason = reason;
        var leftOut = DeadLetterLeftOut.Nothing;
        try
        {
            while (true)
            {
                try
                {
                    return await ReplaceWithCopyAsync(message, deadLetterUrl, copy, message.Envelope.DeliveryAttempt - 1, TimeSpan.Zero, copyReason, cancellationToken).ConfigureAwait(false);
                }
                catch (MessageTooLargeException e) when (SmallerDeadLetter(message.Envelope, copy, reason, e, ref leftOut) is { } smaller)
                {
                    // No room for the reason and the record beside the rest (refused before sending, every time): the message
                    // would come back and fail again for good. A smaller copy still says which message it was and why.
                    (copy, copyReason) = smaller;
                }
            }
        }
        catch (Exception e) when (transport.ForgetIfGone(queue, e))
        {
            // The dead-letter queue was deleted behind Herald's back: the consumer's retry of this settlement finds it again.
            throw;
        }
    }

    /// <summary>What a dead-letter copy too large for SQS is made again without, each step leaving out more.</summary>
    private enum DeadLetterLeftOut
    {
        Nothing,
        Body,
        Headers,
    }

    // The last copy keeps an attribute naming the message, and the reason, only up to these sizes: a message of another
    // producer may carry any of them larger than SQS takes on a copy (up to 1 MiB in all since 2025, 256 KiB here).
    private const int MinimalCopyMaxBytes = 1024;
    private const int MinimalCopyMaxReasonChars = 4096;

    /// <summary>
    /// The dead-letter copy with the next thing that makes it smaller left out (what it does not have is skipped), logged
    /// and said in its reason; null once nothing is left to leave out. First its body (as on Kafka); then its headers
    /// (the record's and the dead letter's own), any other attribute over 1 KiB and the reason past 4,096 characters, which
    /// leaves a copy far below SQS's limit. Without a type the drain reads it as undecodable, which still stores it with
    /// the reason: better than a message that comes back and fails for good.
    /// </summary>
    private (Envelope Copy, string Reason)? SmallerDeadLetter(Envelope original, Envelope copy, string reason, MessageTooLargeException refusal, ref DeadLetterLeftOut leftOut)
    {
        var body = original.Body.Length;
        if (leftOut < DeadLetterLeftOut.Body && body > 0)
        {
            leftOut = DeadLetterLeftOut.Body;
            Log.DeadLetterBodyLeftOut(transport.Logger, refusal, original.MessageId, queue, body);
            return (copy with { Body = ReadOnlyMemory<byte>.Empty }, string.Create(CultureInfo.InvariantCulture, $"{reason} (its body of {body} bytes was left out: {refusal.Message})"));
        }

        if (leftOut >= DeadLetterLeftOut.Headers)
        {
            return null;
        }

        leftOut = DeadLetterLeftOut.Headers;

        // No names: a header's name may be what is large. The source stays when small: it says whose message it was.
        var what = new List<string>
        {
            string.Create(CultureInfo.InvariantCulture, $"its {copy.Headers.Count} headers of {copy.Headers.Sum(h => Encoding.UTF8.GetByteCount(h.Key) + Encoding.UTF8.GetByteCount(h.Value))} bytes"),
        };
        var source = copy.Headers.TryGetValue(HeaderNames.Source, out var named) && IsSmall(named) ? named : null;
        var minimal = copy with
        {
            Body = ReadOnlyMemory<byte>.Empty,
            Headers = source is null ? new Dictionary<string, string>(StringComparer.Ordinal) : new Dictionary<string, string>(StringComparer.Ordinal) { [HeaderNames.Source] = source },
            MessageType = Small(copy.MessageType, "type", what) ?? "",
            ContentType = Small(copy.ContentType, "content type", what)!,
            PartitionKey = Small(copy.PartitionKey, "partition key", what),
            CorrelationId = Small(copy.CorrelationId, "correlation id", what),
            CausationId = Small(copy.CausationId, "causation id", what),
            UserId = Small(copy.UserId, "user id", what),
        };
        if (reason.Length > MinimalCopyMaxReasonChars)
        {
            what.Add(string.Create(CultureInfo.InvariantCulture, $"its reason past {MinimalCopyMaxReasonChars} of {reason.Length} characters"));
            reason = reason[..(char.IsHighSurrogate(reason[MinimalCopyMaxReasonChars - 1]) ? MinimalCopyMaxReasonChars - 1 : MinimalCopyMaxReasonChars)];
        }

        var leftOutText = string.Join(", ", what);
        Log.DeadLetterHeadersLeftOut(transport.Logger, refusal, original.MessageId, queue, leftOutText);
        var bodyLeftOut = body > 0 ? string.Create(CultureInfo.InvariantCulture, $"its body of {body} bytes, ") : "";
        return (minimal, $"{reason} ({bodyLeftOut}{leftOutText} were left out: {refusal.Message})");
    }

    private static bool IsSmall(string value) => Encoding.UTF8.GetByteCount(value) <= MinimalCopyMaxBytes;

    /// <summary><paramref name="value"/> when small, else null, with what was left out added to <paramref name="what"/>.</summary>
    private static string? Small(string? value, string name, List<string> what)
    {
        if (value is null || IsSmall(value))
        {
            return value;
        }

        what.Add(string.Create(CultureInfo.InvariantCulture, $"its {name} of {Encoding.UTF8.GetByteCount(value)} bytes"));
        return null;
    }

    private static Envelope WithHeaders(Envelope envelope, IReadOnlyDictionary<string, string>? headers) =>
        headers is null ? envelope : envelope with { Headers = headers };

    /// <summary>
    /// Sends a copy of the message to <paramref name="copyUrl"/>, then deletes the message; false when its receipt was lost.
    /// The consumer retries a settlement that threw: the copy is sent once, so a retry after a failed delete only deletes.
    /// </summary>
    private async Task<bool> ReplaceWithCopyAsync(
        SqsMessage message,
        string copyUrl,
        Envelope copy,
        int attemptsBefore,
        TimeSpan delay,
        string? reason,
        CancellationToken cancellationToken)
    {
        if (!message.CopySent)
        {
            await transport.SendCopyAsync(copyUrl, copy, attemptsBefore, delay, reason, cancellationToken).ConfigureAwait(false);
            message.CopySent = true;
        }

        return await transport.DeleteAsync(queueUrl, message.ReceiptHandle).ConfigureAwait(false);
    }

    // SQS counts the next receive of a message handed back as a delivery: it has no way to return one uncounted.
    public async ValueTask ReleaseAsync(SqsMessage message, CancellationToken cancellationToken)
    {
        _held.TryRemove(message, out _);
        if (StillHidden(message, transport.Now().UtcTicks))
        {
            await transport.ChangeVisibilityAsync(queueUrl, message.ReceiptHandle, TimeSpan.Zero, cancellationToken).ConfigureAwait(false);
        }
    }

    public async ValueTask ReleaseAllAsync(CancellationToken cancellationToken)
    {
        var now = transport.Now().UtcTicks;
        var held = _held.Keys.Where(m => StillHidden(m, now)).Select(m => m.ReceiptHandle).ToList();
        _held.Clear();
        await ChangeVisibilityToZeroAsync(held, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>
    /// True while at least a third of the message's visibility is known to be left (the rule the consumer starts a message
    /// by), so a hand-back is made only under a receipt that still holds it: SQS applies a stale receipt handle to the
    /// message's current delivery, and would expose one another consumer is handling. Otherwise it comes back by itself.
    /// </summary>
    private bool StillHidden(SqsMessage message, long now) => message.VisibleUntil - now >= _lease.Ticks / 3;

    private async Task ChangeVisibilityToZeroAsync(IReadOnlyList<string> receiptHandles, CancellationToken cancellationToken)
    {
        foreach (var chunk in receiptHandles.Chunk(SqsBatcher<SqsMessage>.MaxBatch))
        {
            // Failed entries (a receipt lost meanwhile) need nothing: those messages come back when their visibility ends.
            await transport.Client.ChangeMessageVisibilityBatchAsync(
                new ChangeMessageVisibilityBatchRequest
                {
                    QueueUrl = queueUrl,
                    Entries = [.. chunk.Select((handle, i) => new ChangeMessageVisibilityBatchRequestEntry
                    {
                        Id = i.ToString(System.Globalization.CultureInfo.InvariantCulture),
                        ReceiptHandle = handle,
                        VisibilityTimeout = 0,
                    })],
                },
                cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>
    /// Holds back a copy received before its due time: on a standard queue a new copy with the rest of the delay (up to
    /// 15 minutes of DelaySeconds per hop) replaces it; on a FIFO queue, where a copy would lose its place in the group, or
    /// for a message too large for SQS to take a copy of, the message is hidden for the rest (up to 12 hours per hop),
    /// save on a FIFO queue once its receives reached <c>MaxReceiveCount</c>, where a copy replaces it.
    /// Never throws: a message that cannot be held back comes back when its visibility ends, and the rest of its batch is
    /// handed out meanwhile.
    /// </summary>
    /// <remarks>
    /// Not cancelled when the consumer stops: a copy handed to the batcher is sent whatever the consumer does, and an original
    /// not deleted after it would come back to be copied again.
    /// </remarks>
    private async Task HoldBackAsync(Message received, Envelope envelope, SqsEnvelopeCodec.Carried carried, DateTimeOffset due, DateTimeOffset now)
    {
        try
        {
            // A FIFO queue hides the message, keeping its place in its group, while SQS's redrive policy leaves it another
            // receive: hidden once it was received MaxReceiveCount times, SQS would move it to the dead-letter queue at its
            // next receive, never delivered. A new copy starts its count again (at the end of its group).
            var hide = transport.Options.FifoQueues && !(transport.Options.MaxReceiveCount is { } most && SqsEnvelopeCodec.ReceivesOf(received) >= most);
            if (hide || !await TrySendHeldBackCopyAsync(envelope, carried, due).ConfigureAwait(false))
            {
                var left = due - now;
                var hop = left < AmazonSqsTransportOptions.MaxVisibility - AmazonSqsTransport.VisibilityMargin ? left : AmazonSqsTransportOptions.MaxVisibility - AmazonSqsTransport.VisibilityMargin;
                await transport.ChangeVisibilityAsync(queueUrl, received.ReceiptHandle, hop, CancellationToken.None).ConfigureAwait(false);
                return;
            }
        }
#pragma warning disable CA1031 // One message's failure must not cost the rest of the batch; this one is left to its visibility timeout.
        catch (Exception e)
#pragma warning restore CA1031
        {
            Log.HoldBackFailed(transport.Logger, e, envelope.MessageId, queue);
            return;
        }

        try
        {
            if (!await transport.DeleteAsync(queueUrl, received.ReceiptHandle).ConfigureAwait(false))
            {
                Log.HeldBackOriginalNotDeleted(transport.Logger, null, envelope.MessageId, queue);
            }
        }
#pragma warning disable CA1031 // The copy is sent: nothing undoes it, and the original's second copy is what the log reports.
        catch (Exception e)
#pragma warning restore CA1031
        {
            Log.HeldBackOriginalNotDeleted(transport.Logger, e, envelope.MessageId, queue);
        }
    }

    /// <summary>
    /// Sends the held-back copy; false when it would be larger than SQS takes (refused before sending, every time: a message
    /// from another producer, which SQS takes up to 1 MiB since 2025), so it would otherwise come back and fail until due.
    /// </summary>
    private async Task<bool> TrySendHeldBackCopyAsync(Envelope envelope, SqsEnvelopeCodec.Carried carried, DateTimeOffset due)
    {
        try
        {
            await transport.SendHeldBackCopyAsync(queueUrl, envelope, carried.AttemptsBefore, due).ConfigureAwait(false);
            return true;
        }
        catch (MessageTooLargeException e)
        {
            Log.HeldBackCopyTooLarge(transport.Logger, e, envelope.MessageId, queue);
            return false;
        }
    }
}
