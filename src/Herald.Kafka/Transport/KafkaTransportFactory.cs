using Herald.Transport;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Herald.Kafka.Transport;

/// <summary>Creates the Kafka transport without dependency injection (tests, tools, hand-wired hosts).</summary>
public static class KafkaTransportFactory
{
    /// <summary>
    /// Validates the options, connects to the cluster and returns the transport; throws a <see cref="HeraldException"/>
    /// naming the brokers when it cannot reach them. Dispose the transport to close its clients.
    /// </summary>
    public static async Task<ITransport> CreateAsync(
        KafkaTransportOptions options,
        TimeProvider? timeProvider = null,
        ILoggerFactory? loggerFactory = null,
        CancellationToken cancellationToken = default)
    {
        var transport = new KafkaTransport(options, timeProvider ?? TimeProvider.System, loggerFactory ?? NullLoggerFactory.Instance);
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
