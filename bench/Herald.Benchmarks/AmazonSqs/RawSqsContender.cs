using System.Globalization;
using System.Text;
using Amazon.SQS;
using Amazon.SQS.Model;
using Herald.Benchmarks.RabbitMq;

namespace Herald.Benchmarks.AmazonSqs;

/// <summary>
/// The bare AWSSDK.SQS client, as a user would write it by hand: sends of the JSON body with a message-id attribute, either
/// one <c>SendMessage</c> per message or <c>SendMessageBatch</c> of ten; consuming with one long-poll loop of ten per receive,
/// each body deserialized, then one <c>DeleteMessageBatch</c> per receive.
/// </summary>
internal sealed class RawSqsContender(bool batchSends) : IBrokerContender
{
    public const string OnePerCall = "AWSSDK.SQS (SendMessage)";
    public const string Batched = "AWSSDK.SQS (SendMessageBatch)";

    private static readonly string BodyText = Encoding.UTF8.GetString(BrokerWorkload.Body.Span);
    private AmazonSQSClient? _client;

    public string Name => batchSends ? Batched : OnePerCall;

    public string Setup =>
        (batchSends ? "`SendMessageBatch` of 10 messages per call, " : "`SendMessage` per message, ") +
        "each with a `message-id` string attribute; consume: one loop of `ReceiveMessage` (10 at most, long poll 20 s), the bodies deserialized, then `DeleteMessageBatch` of the receive, in turn";

    private AmazonSQSClient Client => _client ?? throw new InvalidOperationException("Not started.");

    public Task StartAsync(CancellationToken cancellationToken)
    {
        _client = new AmazonSQSClient(SqsBench.Credentials, SqsBench.Config());
        return Task.CompletedTask;
    }

    public async Task PublishAsync(string queue, int count, int outstanding, CancellationToken cancellationToken)
    {
        var url = (await Client.CreateQueueAsync(queue, cancellationToken)).QueueUrl;
        if (!batchSends)
        {
            await BrokerWorkload.RunConcurrentlyAsync(count, outstanding, (_, ct) =>
                Client.SendMessageAsync(new SendMessageRequest { QueueUrl = url, MessageBody = BodyText, MessageAttributes = Attributes() }, ct), cancellationToken);
            return;
        }

        var batches = (count + 9) / 10;
        await BrokerWorkload.RunConcurrentlyAsync(batches, Math.Max(1, outstanding / 10), async (b, ct) =>
        {
            var size = Math.Min(10, count - (b * 10));
            var entries = Enumerable.Range(0, size).Select(i => new SendMessageBatchRequestEntry
            {
                Id = i.ToString(CultureInfo.InvariantCulture),
                MessageBody = BodyText,
                MessageAttributes = Attributes(),
            }).ToList();
            var response = await Client.SendMessageBatchAsync(new SendMessageBatchRequest { QueueUrl = url, Entries = entries }, ct);
            if (response.Failed is { Count: > 0 } failed)
            {
                throw new InvalidOperationException($"{failed.Count} sends failed: {failed[0].Message}");
            }
        }, cancellationToken);
    }

    public async Task<IAsyncDisposable> ConsumeAsync(string queue, int count, CancellationToken cancellationToken)
    {
        var url = (await Client.GetQueueUrlAsync(queue, cancellationToken)).QueueUrl;
        var received = 0;
        while (received < count)
        {
            var response = await Client.ReceiveMessageAsync(new ReceiveMessageRequest { QueueUrl = url, MaxNumberOfMessages = 10, WaitTimeSeconds = 20, MessageAttributeNames = ["All"] }, cancellationToken);
            var messages = response.Messages ?? [];
            if (messages.Count == 0)
            {
                continue;
            }

            foreach (var message in messages)
            {
                BrokerWorkload.Decode(Encoding.UTF8.GetBytes(message.Body));
            }

            await Client.DeleteMessageBatchAsync(new DeleteMessageBatchRequest
            {
                QueueUrl = url,
                Entries = [.. messages.Select((m, i) => new DeleteMessageBatchRequestEntry { Id = i.ToString(CultureInfo.InvariantCulture), ReceiptHandle = m.ReceiptHandle })],
            }, cancellationToken);
            received += messages.Count;
        }

        return new StopOnDispose(() => ValueTask.CompletedTask);
    }

    public ValueTask DisposeAsync()
    {
        _client?.Dispose();
        return ValueTask.CompletedTask;
    }

    private static Dictionary<string, MessageAttributeValue> Attributes() => new(StringComparer.Ordinal)
    {
        ["message-id"] = new MessageAttributeValue { DataType = "String", StringValue = Guid.CreateVersion7().ToString() },
    };
}
