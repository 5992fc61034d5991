using System.Globalization;
using System.Text;
using Amazon.SQS;
using Amazon.SQS.Model;
using Herald.Benchmarks.RabbitMq;

namespace Herald.Benchmarks.AmazonSqs;

/// <summary>
/// The bare AWSSDK.SQS client, as a user would write it by hand: sends of the JSON body with a message-id attribute, either
/// one <c>SendMessage</c> per message or <c>SendMessageBatch</c> of ten; consuming with one long-poll loop of ten per receive,
/// each body deserialized, then one <c>DeleteMessageBatch</c> per receive. With <c>cloudEvents</c>, each message carries the
/// attributes Herald writes (the CloudEvents <c>ce_</c> attributes and the content type) and the consumer parses the id and
/// time back, as Herald's does: the like-for-like pair for the wire work, since the emulator's cost grows with attributes.
/// </summary>
internal sealed class RawSqsContender(bool batchSends, bool cloudEvents = false) : IBrokerContender
{
    public const string OnePerCall = "AWSSDK.SQS (SendMessage)";
    public const string Batched = "AWSSDK.SQS (SendMessageBatch)";
    public const string BatchedCloudEvents = "AWSSDK.SQS (SendMessageBatch, CloudEvents attributes)";

    private static readonly string BodyText = Encoding.UTF8.GetString(BrokerWorkload.Body.Span);
    private AmazonSQSClient? _client;

    public string Name => cloudEvents ? BatchedCloudEvents : batchSends ? Batched : OnePerCall;

    public string Setup =>
        (batchSends ? "`SendMessageBatch` of 10 messages per call, " : "`SendMessage` per message, ") +
        (cloudEvents
            ? "each with the attributes Herald writes (`ce_specversion`, `ce_id`, `ce_time`, `ce_type`, `content-type`, `ce_source`, `ce_correlationid`); consume: one loop of `ReceiveMessage` (10 at most, long poll 20 s), each message's id and time parsed and its body deserialized, then `DeleteMessageBatch` of the receive, in turn"
            : "each with a `message-id` string attribute; consume: one loop of `ReceiveMessage` (10 at most, long poll 20 s), the bodies deserialized, then `DeleteMessageBatch` of the receive, in turn");

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
                if (cloudEvents)
                {
                    _ = Guid.Parse(message.MessageAttributes["ce_id"].StringValue);
                    _ = DateTimeOffset.Parse(message.MessageAttributes["ce_time"].StringValue, CultureInfo.InvariantCulture);
                }

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

    private Dictionary<string, MessageAttributeValue> Attributes()
    {
        if (!cloudEvents)
        {
            return new(StringComparer.Ordinal) { ["message-id"] = Text(Guid.CreateVersion7().ToString()) };
        }

        var id = Guid.CreateVersion7().ToString();
        return new(7, StringComparer.Ordinal)
        {
            ["ce_specversion"] = Text("1.0"),
            ["ce_id"] = Text(id),
            ["ce_time"] = Text(DateTimeOffset.UtcNow.ToString("yyyy-MM-dd'T'HH:mm:ss.fff'Z'", CultureInfo.InvariantCulture)),
            ["ce_type"] = Text("bench-message"),
            ["content-type"] = Text("application/json"),
            ["ce_source"] = Text("/herald/bench"),
            ["ce_correlationid"] = Text(id),
        };
    }

    private static MessageAttributeValue Text(string value) => new() { DataType = "String", StringValue = value };
}
