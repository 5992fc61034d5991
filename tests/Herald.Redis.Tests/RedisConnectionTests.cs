using System.Net;
using Herald.Conformance;
using Herald.Conformance.Faults;
using Herald.Redis.Internal;
using StackExchange.Redis;

namespace Herald.Redis.Tests;

/// <summary>The shared connection's connect: what a cancelled connect opens afterwards is closed, not leaked.</summary>
public sealed class RedisConnectionTests
{
    /// <summary>
    /// Regression: a connect cancelled while the server had not answered yet threw to the caller but went on, and the
    /// multiplexer it then opened was kept by nobody, so its connections to Redis stayed open for the process's life.
    /// </summary>
    [Fact]
    public async Task ConnectCancelledBeforeTheServerAnswers_ClosesTheConnectionsItOpensAfterwards()
    {
        var target = ConfigurationOptions.Parse(RedisFixture.Configuration);
        target.SetDefaultPorts();
        await using var forwarder = new TcpForwarder(target.EndPoints[0] switch
        {
            DnsEndPoint dns => dns.Port,
            IPEndPoint ip => ip.Port,
            var other => throw new InvalidOperationException($"Unexpected Redis endpoint {other}."),
        });
        var configuration = target.Clone();
        configuration.EndPoints.Clear();
        configuration.EndPoints.Add(IPAddress.Loopback, forwarder.Port);
        // The held connect must outlive the cancellation and the release, not time out on its own.
        configuration.ConnectTimeout = 30_000;
        await using var connection = RedisConnection.Create(new RedisOptions { Configuration = configuration.ToString() });
        forwarder.Hold();
        using var cancel = new CancellationTokenSource();

        var connecting = connection.ConnectAsync(cancel.Token).AsTask();
        await forwarder.Accepted.WaitAsync(Eventually.DefaultTimeout);
        await cancel.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => connecting);

        // The server answers now: the given-up connect completes, and closes what it opened.
        forwarder.Release();
        await Eventually.UntilAsync(() => forwarder.BytesFromServer > 0, "the server answers the given-up connect");
        await Eventually.UntilAsync(() => forwarder.OpenConnections == 0, "the connections of the given-up connect are closed");
    }
}
