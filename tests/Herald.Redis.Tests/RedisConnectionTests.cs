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
        await using var forwarder = ForwarderToRedis();
        await using var connection = RedisConnection.Create(new RedisOptions { Configuration = HeldConfiguration(forwarder) });
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

    /// <summary>
    /// Regression: the connection disposed while a connect nobody cancelled waited for the server; the multiplexer that
    /// connect then opened was stored after the dispose and never closed, so its connections to Redis stayed open.
    /// </summary>
    [Fact]
    public async Task DisposedWhileAConnectWaitsForTheServer_TheConnectClosesWhatItOpensAndThrowsDisposed()
    {
        await using var forwarder = ForwarderToRedis();
        var connection = RedisConnection.Create(new RedisOptions { Configuration = HeldConfiguration(forwarder) });
        forwarder.Hold();

        var connecting = connection.ConnectAsync(CancellationToken.None).AsTask();
        await forwarder.Accepted.WaitAsync(Eventually.DefaultTimeout);
        await connection.DisposeAsync();

        // The server answers now: the connect completes after the dispose, and closes what it opened.
        forwarder.Release();
        await Assert.ThrowsAsync<ObjectDisposedException>(() => connecting);
        Assert.True(forwarder.BytesFromServer > 0, "the server answered the connect");
        await Eventually.UntilAsync(() => forwarder.OpenConnections == 0, "the connections of the connect that finished after the dispose are closed");
        await Assert.ThrowsAsync<ObjectDisposedException>(async () => await connection.ConnectAsync(CancellationToken.None));
    }

    private static TcpForwarder ForwarderToRedis()
    {
        var target = ConfigurationOptions.Parse(RedisFixture.Configuration);
        target.SetDefaultPorts();
        return new TcpForwarder(target.EndPoints[0] switch
        {
            DnsEndPoint dns => dns.Port,
            IPEndPoint ip => ip.Port,
            var other => throw new InvalidOperationException($"Unexpected Redis endpoint {other}."),
        });
    }

    private static string HeldConfiguration(TcpForwarder forwarder)
    {
        var configuration = ConfigurationOptions.Parse(RedisFixture.Configuration);
        configuration.EndPoints.Clear();
        configuration.EndPoints.Add(IPAddress.Loopback, forwarder.Port);
        // The held connect must outlive the cancellation or dispose and the release, not time out on its own.
        configuration.ConnectTimeout = 30_000;
        return configuration.ToString();
    }
}
