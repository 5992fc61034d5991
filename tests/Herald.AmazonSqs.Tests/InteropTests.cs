using System.Collections.Concurrent;
using System.Text.Json;
using Herald.Conformance;
using Herald.Handling;
using Herald.Messages;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Xunit.Abstractions;

namespace Herald.AmazonSqs.Tests;

/// <summary>Raw JSON interop (issue 13 item 4) with Node's own SQS client, @aws-sdk/client-sqs: both ways, and a duplicate by id suppressed.</summary>
public sealed class InteropTests(ITestOutputHelper output) : SqsTestBase
{
    [Fact]
    public async Task NodeClient_SendsPlainJsonTwiceWithOneId_HeraldHandlesItOnce()
    {
        if (await NodeSqsClient.UnavailableAsync() is { } why)
        {
            output.WriteLine($"Skipped, nothing checked: {why}");
            return;
        }

        var queue = Name("from-node");
        var handled = new ConcurrentQueue<(OrderPlaced Order, string? Tenant, Guid Id)>();
        var builder = Host.CreateApplicationBuilder();
        builder.Logging.ClearProviders();
        builder.Services.AddSingleton(handled);
        builder.Services.AddHerald(h => h
            .Configure(o => o.EndpointName = queue)
            .AddHandler<OrderPlacedHandler>(ServiceLifetime.Singleton)
            .AddMessageType<OrderPlaced>()
            .UseInbox()
            .UseAmazonSqs(o =>
            {
                o.Credentials = SqsEmulator.Credentials;
                o.ClientConfig.ServiceURL = SqsEmulator.ServiceUrl;
                o.ClientConfig.AuthenticationRegion = "us-east-1";
                o.RawQueues[queue] = "order-placed";
            }));
        using var host = builder.Build();
        await host.StartAsync();

        using var client = SqsEmulator.NewClient();
        var url = (await client.GetQueueUrlAsync(queue)).QueueUrl;
        var id = Guid.NewGuid();
        await NodeSqsClient.RunAsync("send", SqsEmulator.ServiceUrl, url, id.ToString(), "2");

        // Both copies are taken off the queue; the inbox lets the second through without handling it again.
        await Eventually.UntilAsync(async () =>
        {
            var counts = await client.GetQueueAttributesAsync(url, ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]);
            return !handled.IsEmpty && counts.ApproximateNumberOfMessages + counts.ApproximateNumberOfMessagesNotVisible == 0;
        }, "both copies from Node consumed");
        await host.StopAsync();

        var (order, tenant, handledId) = Assert.Single(handled);
        Assert.Equal(7, order.OrderId);
        Assert.Equal("acme", tenant);
        Assert.Equal(id, handledId);
    }

    [Fact]
    public async Task HeraldMessage_IsReadByNodesClient()
    {
        if (await NodeSqsClient.UnavailableAsync() is { } why)
        {
            output.WriteLine($"Skipped, nothing checked: {why}");
            return;
        }

        var transport = await CreateTransportAsync();
        var queue = Name("to-node");
        var sent = NewEnvelope("order-placed", "{\"orderId\":9}") with { CorrelationId = "c-9", Headers = new Dictionary<string, string> { ["tenant"] = "acme" } };
        await transport.SendAsync(queue, sent);
        var url = await transport.QueueUrlAsync(queue, CancellationToken.None);

        using var doc = JsonDocument.Parse(await NodeSqsClient.RunAsync("receive", SqsEmulator.ServiceUrl, url));
        var attributes = doc.RootElement.GetProperty("attributes");
        Assert.Equal(9, doc.RootElement.GetProperty("body").GetProperty("orderId").GetInt32());
        Assert.Equal(sent.MessageId.ToString(), attributes.GetProperty("ce_id").GetString());
        Assert.Equal("order-placed", attributes.GetProperty("ce_type").GetString());
        Assert.Equal("1.0", attributes.GetProperty("ce_specversion").GetString());
        Assert.Equal("c-9", attributes.GetProperty("ce_correlationid").GetString());
        Assert.Equal("application/json", attributes.GetProperty("content-type").GetString());
        Assert.Contains("\"tenant\":\"acme\"", attributes.GetProperty("herald").GetString(), StringComparison.Ordinal);
    }

    /// <summary>What Node sends.</summary>
    [MessageType("order-placed")]
    public sealed record OrderPlaced(int OrderId);

    /// <summary>Notes each order handled, with its tenant header and id.</summary>
    public sealed class OrderPlacedHandler(ConcurrentQueue<(OrderPlaced, string?, Guid)> handled) : IMessageHandler<OrderPlaced>
    {
        /// <inheritdoc />
        public ValueTask HandleAsync(OrderPlaced message, MessageContext context, CancellationToken cancellationToken)
        {
            handled.Enqueue((message, context.Envelope.GetHeader("tenant"), context.Envelope.MessageId));
            return ValueTask.CompletedTask;
        }
    }
}
