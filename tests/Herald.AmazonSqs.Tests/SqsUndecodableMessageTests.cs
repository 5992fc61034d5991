using System.Collections.Concurrent;
using System.Text;
using Amazon.SQS.Model;
using Herald.Conformance.Transport;
using Herald.Hosting;
using Microsoft.Extensions.DependencyInjection;

namespace Herald.AmazonSqs.Tests;

/// <summary>
/// SQS against <see cref="UndecodableMessageConformance"/>: messages a foreign client writes with an impossible time, and
/// with every attribute wrong (an id that is no Guid, no type, a time that is no time, a broken Herald attribute, a body
/// that is no JSON). The queues are deleted afterwards.
/// </summary>
public sealed class SqsUndecodableMessageTests : UndecodableMessageConformance, IAsyncLifetime
{
    private readonly ConcurrentDictionary<string, byte> _queues = new(StringComparer.Ordinal);

    public Task InitializeAsync() => Task.CompletedTask;

    public Task DisposeAsync() => SqsEmulator.DeleteQueuesAsync(_queues.Keys);

    protected override void UseTransport(HeraldBuilder herald) => herald.UseAmazonSqs(o =>
    {
        var emulator = SqsEmulator.Options();
        o.Credentials = emulator.Credentials;
        o.ClientConfig.ServiceURL = emulator.ClientConfig.ServiceURL;
        o.ClientConfig.AuthenticationRegion = emulator.ClientConfig.AuthenticationRegion;
        o.VisibilityTimeout = emulator.VisibilityTimeout;
    });

    protected override Task WriteUndecodableAsync(string queue, Guid messageId) => WriteAsync(queue, new SendMessageRequest
    {
        MessageBody = Encoding.UTF8.GetString(UndecodableBody.Span),
        MessageAttributes = new Dictionary<string, MessageAttributeValue>
        {
            ["ce_specversion"] = Text("1.0"),
            ["ce_id"] = Text(messageId.ToString()),
            ["ce_type"] = Text(ProbeType),
            ["ce_time"] = Text("the day after tomorrow"),
        },
    });

    protected override Task WriteBrokenAsync(string queue) => WriteAsync(queue, new SendMessageRequest
    {
        MessageBody = "<not json at all>",
        MessageAttributes = new Dictionary<string, MessageAttributeValue>
        {
            ["ce_specversion"] = Text("0.3"),
            ["ce_id"] = Text("not-a-guid"),
            ["ce_time"] = Text("9999-99-99T99:99:99Z"),
            ["herald"] = Text("{\"headers\":[1,2"),
        },
    });

    protected override Task<long> CountQueuedAsync(string queue) => CountAsync(queue);

    protected override Task<long> CountNativeDeadLettersAsync(string queue) => CountAsync(queue + "-dead-letter");

    private async Task WriteAsync(string queue, SendMessageRequest request)
    {
        _queues.TryAdd(queue, 0);
        using var client = SqsEmulator.NewClient();
        request.QueueUrl = (await client.GetQueueUrlAsync(queue)).QueueUrl;
        await client.SendMessageAsync(request);
    }

    private static async Task<long> CountAsync(string queue)
    {
        using var client = SqsEmulator.NewClient();
        var url = (await client.GetQueueUrlAsync(queue)).QueueUrl;
        var attributes = await client.GetQueueAttributesAsync(url, ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible", "ApproximateNumberOfMessagesDelayed"]);
        return attributes.ApproximateNumberOfMessages + attributes.ApproximateNumberOfMessagesNotVisible + attributes.ApproximateNumberOfMessagesDelayed;
    }

    private static MessageAttributeValue Text(string value) => new() { DataType = "String", StringValue = value };
}
