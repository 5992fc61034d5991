using Herald.Conformance;
using Herald.Handling;
using Herald.Streams;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace Herald.Kafka.Tests;

/// <summary>A stream fed by a Kafka topic through the host's endpoint (the same path as every transport source).</summary>
public sealed class StreamSourceTests : KafkaTestBase
{
    [Fact]
    public async Task TransportSourceStream_CountsTheTopicsMessagesPerPartitionKey()
    {
        var builder = Host.CreateApplicationBuilder();
        builder.Logging.ClearProviders();
        builder.Services.AddHerald(h => h
            .UseKafka(ApplyTestOptions)
            .AddMessageType<Visit>("kafka-stream-visit")
            .AddStream(
                "visits",
                b => b.Stream<Visit>().GroupByKey().Count("per-user"),
                new StreamProcessorOptions { Source = StreamSource.Transport, Partitions = 2 })
            .Configure(o => o.EndpointName = Name("stream")));
        using var host = builder.Build();
        await host.StartAsync();
        try
        {
            var bus = host.Services.GetRequiredService<IMessageBus>();
            foreach (var user in new[] { "ann", "bob", "ann", "cat", "ann" })
            {
                await bus.PublishAsync(new Visit("/home"), new DeliveryOptions { PartitionKey = user });
            }

            var processor = host.Services.GetRequiredService<StreamProcessors>()["visits"];
            await Eventually.UntilAsync(
                async () => await processor.QueryAsync<string, long>("per-user", "ann") == 3
                    && await processor.QueryAsync<string, long>("per-user", "bob") == 1
                    && await processor.QueryAsync<string, long>("per-user", "cat") == 1,
                "every visit is counted under its partition key",
                TimeSpan.FromSeconds(30));
        }
        finally
        {
            await host.StopAsync();
        }
    }

    public sealed record Visit(string Page);
}
