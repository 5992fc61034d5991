using Herald.Internal;
using Herald.Transport;
using Microsoft.Extensions.Logging;

namespace Herald.RabbitMQ.Transport;

/// <summary>Creates the RabbitMQ transport without dependency injection (tests, tools, hand-wired hosts).</summary>
public static class RabbitMqTransportFactory
{
    /// <summary>
    /// Validates the options, connects to the broker and returns the transport; throws a <see cref="HeraldException"/>
    /// naming the host when it cannot connect. Dispose the transport to close its connections.
    /// </summary>
    public static async Task<ITransport> CreateAsync(
        RabbitMqTransportOptions options,
        TimeProvider? timeProvider = null,
        ILoggerFactory? loggerFactory = null,
        CancellationToken cancellationToken = default)
    {
        return await Components.CreateStartedAsync(
            options, timeProvider, loggerFactory, static (o, t, l) => new RabbitMqTransport(o, t, l), static (transport, ct) => transport.ConnectAsync(ct).AsTask(), cancellationToken)
            .ConfigureAwait(false);
    }
}
