using Amazon.Runtime;
using Amazon.SQS;
using Amazon.SQS.Model;
using Herald.AmazonSqs.Transport;

namespace Herald.Benchmarks.AmazonSqs;

/// <summary>The endpoint both sides of the SQS benchmark use, and what they share.</summary>
internal static class SqsBench
{
    public static string ServiceUrl { get; } = Environment.GetEnvironmentVariable("HERALD_BENCH_SQS") is { Length: > 0 } url ? url : "http://127.0.0.1:9324";

    public static readonly AWSCredentials Credentials = new BasicAWSCredentials("herald-bench", "herald-bench");

    public static AmazonSQSConfig Config()
    {
        var config = new AmazonSQSConfig { ServiceURL = ServiceUrl, AuthenticationRegion = "us-east-1" };
        return config;
    }

    public static AmazonSqsTransportOptions HeraldOptions()
    {
        var options = new AmazonSqsTransportOptions { Credentials = Credentials };
        options.ClientConfig.ServiceURL = ServiceUrl;
        options.ClientConfig.AuthenticationRegion = "us-east-1";
        return options;
    }

    /// <summary>Deletes every queue whose name starts with the prefix (the run's queues and their dead-letter queues).</summary>
    public static async Task DeleteQueuesAsync(string prefix)
    {
        using var client = new AmazonSQSClient(Credentials, Config());
        var listed = await client.ListQueuesAsync(new ListQueuesRequest { QueueNamePrefix = prefix });
        foreach (var url in listed.QueueUrls ?? [])
        {
            await client.DeleteQueueAsync(new DeleteQueueRequest { QueueUrl = url });
        }
    }
}
