using Herald.Transport;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

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
        var transport = new RabbitMqTransport(options, timeProvider ?? TimeProvider.System, loggerFactory ?? NullLoggerFactory.Instance);
        try
        {
            await transport.ConnectAsync(cancellationToken).ConfigureAwait(false);
        }
        catch
        {
            await transport.DisposeAsync().ConfigureAwait(false);
            throw;
        }

        return transport;
    }
}
