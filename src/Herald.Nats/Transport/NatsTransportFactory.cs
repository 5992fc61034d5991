using Herald.Internal;
using Herald.Transport;
using Microsoft.Extensions.Logging;

namespace Herald.Nats.Transport;

/// <summary>Creates the NATS JetStream transport without dependency injection (tests, tools, hand-wired hosts).</summary>
public static class NatsTransportFactory
{
    /// <summary>
    /// Validates the options, connects to the server, declares the configured streams and returns the transport; throws a
    /// <see cref="HeraldException"/> naming the server when it cannot connect. Dispose the transport to close its connection.
    /// </summary>
    public static async Task<ITransport> CreateAsync(
        NatsTransportOptions options,
        TimeProvider? timeProvider = null,
        ILoggerFactory? loggerFactory = null,
        CancellationToken cancellationToken = default)
    {
        return await Components.CreateStartedAsync(
            options, timeProvider, loggerFactory, static (o, t, l) => new NatsTransport(o, t, l), static (transport, ct) => transport.ConnectAsync(ct).AsTask(), cancellationToken)
            .ConfigureAwait(false);
    }
}
