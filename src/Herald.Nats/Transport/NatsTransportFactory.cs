using Herald.Internal;
using Herald.Transport;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Herald.Nats.Transport;

/// <summary>Creates the NATS JetStream transport without dependency injection (tests, tools, hand-wired hosts).</summary>
public static class NatsTransportFactory
{
    /// <summary>
    /// Validates the options, connects to the server, declares the configured streams and returns the transport; throws a
    /// <see cref="HeraldException"/> naming the server when it cannot connect. Dispose the transport to close its connection.
    /// </summary>
    public static Task<ITransport> CreateAsync(
        NatsTransportOptions options,
        TimeProvider? timeProvider = null,
        ILoggerFactory? loggerFactory = null,
        CancellationToken cancellationToken = default) =>
        CreateCoreAsync(options, timeProvider, loggerFactory, cancellationToken);

    private static async Task<ITransport> CreateCoreAsync(NatsTransportOptions options, TimeProvider? timeProvider, ILoggerFactory? loggerFactory, CancellationToken cancellationToken) =>
        await Components.StartOrDisposeAsync(
            new NatsTransport(options, timeProvider ?? TimeProvider.System, loggerFactory ?? NullLoggerFactory.Instance),
            static (transport, ct) => transport.ConnectAsync(ct).AsTask(),
            cancellationToken).ConfigureAwait(false);
}
