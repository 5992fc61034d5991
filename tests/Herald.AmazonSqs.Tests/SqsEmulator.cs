using System.Collections.Concurrent;
using Amazon.Runtime;
using Amazon.SQS;
using Amazon.SQS.Model;
using Herald.AmazonSqs.Transport;

namespace Herald.AmazonSqs.Tests;

/// <summary>
/// The SQS endpoint the tests run against: the emulator scripts/services.sh starts on 127.0.0.1:9324 (any key and secret,
/// region us-east-1), or the one HERALD_TEST_SQS names. Tests give every queue a unique name and delete it afterwards.
/// </summary>
internal static class SqsEmulator
{
    public static string ServiceUrl { get; } = Environment.GetEnvironmentVariable("HERALD_TEST_SQS") is { Length: > 0 } url ? url : "http://127.0.0.1:9324";

    public static AWSCredentials Credentials { get; } = new BasicAWSCredentials("herald-test", "herald-test");

    /// <summary>
    /// Options pointing at the emulator, with a short visibility timeout so lost work comes back within a test, and SQS's
    /// largest redrive count: the emulator counts every visibility change (each lease renewal) as a receive, so a message
    /// held a while would be redriven to the dead-letter queue long before AWS would.
    /// </summary>
    public static AmazonSqsTransportOptions Options(Action<AmazonSqsTransportOptions>? configure = null)
    {
        var options = new AmazonSqsTransportOptions { Credentials = Credentials, VisibilityTimeout = TimeSpan.FromSeconds(10), MaxReceiveCount = 1000 };
        Configure(options.ClientConfig);
        configure?.Invoke(options);
        return options;
    }

    /// <summary>A client of its own, for what tests do behind Herald's back.</summary>
    public static AmazonSQSClient NewClient()
    {
        var config = new AmazonSQSConfig();
        Configure(config);
        return new AmazonSQSClient(Credentials, config);
    }

    /// <summary>Deletes every SQS queue whose name starts with one of the prefixes (a test's queues, their dead-letter queues and topic registries).</summary>
    public static async Task DeleteQueuesAsync(IEnumerable<string> prefixes)
    {
        using var client = NewClient();
        var urls = new ConcurrentBag<string>();
        foreach (var prefix in prefixes.Distinct(StringComparer.Ordinal))
        {
            var listed = await client.ListQueuesAsync(new ListQueuesRequest { QueueNamePrefix = prefix });
            foreach (var url in listed.QueueUrls ?? [])
            {
                urls.Add(url);
            }
        }

        foreach (var url in urls.Distinct(StringComparer.Ordinal))
        {
            try
            {
                await client.DeleteQueueAsync(new DeleteQueueRequest { QueueUrl = url });
            }
            catch (QueueDoesNotExistException)
            {
            }
        }
    }

    private static void Configure(AmazonSQSConfig config)
    {
        config.ServiceURL = ServiceUrl;
        config.AuthenticationRegion = "us-east-1";
        config.MaxErrorRetry = 2;
    }
}
