using NATS.Client.Core;
using NATS.Client.JetStream;

namespace Herald.Nats.Tests;

/// <summary>
/// The NATS server the tests use: the one scripts/services.sh starts on 127.0.0.1:4222, or <c>HERALD_TEST_NATS</c>. Every
/// test names its streams and subjects with a prefix of its own and deletes them afterwards.
/// </summary>
internal static class NatsServer
{
    public static string Url { get; } = Environment.GetEnvironmentVariable("HERALD_TEST_NATS") is { Length: > 0 } url ? url : "nats://127.0.0.1:4222";

    /// <summary>A stream prefix and a subject prefix no other test (or test run) uses.</summary>
    public static (string Streams, string Subjects) NewPrefixes()
    {
        var id = Guid.NewGuid().ToString("N")[..12];
        return ("HT" + id.ToUpperInvariant(), "ht" + id);
    }

    /// <summary>A plain client of the server, as another application would have.</summary>
    public static async Task<(NatsConnection Connection, NatsJSContext JetStream)> ConnectAsync()
    {
        var connection = new NatsConnection(new NatsOpts { Url = Url, Name = "herald-tests" });
        await connection.ConnectAsync();
        return (connection, new NatsJSContext(connection));
    }

    /// <summary>Deletes every stream whose name starts with the prefix (their consumers go with them).</summary>
    public static async Task DeleteStreamsAsync(string prefix)
    {
        var (connection, js) = await ConnectAsync();
        await using (connection)
        {
            var names = new List<string>();
            await foreach (var name in js.ListStreamNamesAsync())
            {
                // KV_: the KV buckets Herald makes under the prefix (the binding locks).
                if (name.StartsWith(prefix, StringComparison.Ordinal) || name.StartsWith("KV_" + prefix, StringComparison.Ordinal))
                {
                    names.Add(name);
                }
            }

            foreach (var name in names)
            {
                try
                {
                    await js.DeleteStreamAsync(name);
                }
                catch (NATS.Client.JetStream.NatsJSApiException e) when (e.Error.Code == 404)
                {
                    // Gone already: a stream the test's own code deleted, or a source stream removed with its queue.
                }
            }
        }
    }
}
