using Amazon.SQS;
using Amazon.SQS.Model;
using Herald.Internal;
using Herald.Transport;

namespace Herald.AmazonSqs.Transport;

internal sealed partial class AmazonSqsTransport : INativeDeadLetterSource
{
    private static readonly List<string> AllAttributes = ["All"];

    /// <summary>
    /// Reads the queue's dead-letter queue (short polls, hidden for a visibility timeout while each is moved), hands each
    /// message on, and deletes it only after that returned. One it fails on stays hidden while the drain goes on with the
    /// rest (so it does not hold back those behind it), and is made visible again at the end.
    /// Holds both Herald's copies (with their reason) and what SQS's redrive policy moved there after too many receives.
    /// </summary>
    public async ValueTask<int> DrainDeadLettersAsync(string queue, Func<NativeDeadLetter, CancellationToken, ValueTask> moveAsync, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(moveAsync);
        Names.Validate(queue, nameof(queue));
        ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);
        string url;
        try
        {
            url = await DeadLetterQueueUrlAsync(queue, cancellationToken).ConfigureAwait(false);
        }
        catch (QueueDoesNotExistException)
        {
            return 0;
        }

        var rawType = Options.RawQueues.TryGetValue(queue, out var raw) ? raw : null;
        var moved = 0;
        var held = new List<string>();
        var round = new DeadLetterDrainRound();
        try
        {
            while (true)
            {
                var response = await Client.ReceiveMessageAsync(
                    new ReceiveMessageRequest
                    {
                        QueueUrl = url,
                        MaxNumberOfMessages = SqsBatcher<string>.MaxBatch,
                        WaitTimeSeconds = 0,
                        VisibilityTimeout = Seconds(Options.VisibilityTimeout),
                        MessageAttributeNames = AllAttributes,
                        MessageSystemAttributeNames = [SqsEnvelopeCodec.ReceiveCount, SqsEnvelopeCodec.SentTimestamp],
                    },
                    cancellationToken).ConfigureAwait(false);
                if (response.Messages is not { Count: > 0 } messages)
                {
                    round.ThrowIfAnyFailed();
                    return moved;
                }

                // Hidden until deleted below, so made visible again by the finally however this ends.
                held.AddRange(messages.Select(m => m.ReceiptHandle));
                foreach (var message in messages)
                {
                    var envelope = SqsEnvelopeCodec.Decode(message, rawType, Options.Source, Now(), out var carried, out var failure);
                    var deadLetter = new NativeDeadLetter
                    {
                        // Herald's copy counts the attempts before it; a message SQS moved counts its receives on the source queue.
                        Envelope = envelope with
                        {
                            DeliveryAttempt = carried.DeadLetterReason is null ? carried.AttemptsBefore + (Options.MaxReceiveCount ?? 1) : carried.AttemptsBefore + 1,
                        },
                        Queue = queue,
                        Reason = carried.DeadLetterReason
                            ?? $"Received {Options.MaxReceiveCount} times from SQS queue '{Names.Queue(queue)}' without being settled (its consumers failed or stopped each time); SQS's redrive policy moved it to the dead-letter queue.",
                        DecodeFailure = failure,

                        // SQS keeps a message's id through the redrive and every receive.
                        NativeId = "sqs/" + url + "/" + message.MessageId,
                    };
                    if (!await round.TryMoveAsync(moveAsync, deadLetter, cancellationToken).ConfigureAwait(false))
                    {
                        continue;
                    }

                    await DeleteAsync(url, message.ReceiptHandle).ConfigureAwait(false);
                    held.Remove(message.ReceiptHandle);
                    moved++;
                }
            }
        }
        catch (Exception e) when (ForgetIfGone(queue, e))
        {
            // The dead-letter queue was deleted behind Herald's back: the next round creates it again (or looks it up), and
            // so gives SQS's redrive policy its target back, instead of failing on the cached URL until a restart.
            throw;
        }
        finally
        {
            foreach (var receiptHandle in held)
            {
                await ChangeVisibilityAsync(url, receiptHandle, TimeSpan.Zero, CancellationToken.None).ConfigureAwait(false);
            }
        }
    }
}
