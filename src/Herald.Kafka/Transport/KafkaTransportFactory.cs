using Herald.Internal;
using Herald.Transport;
using Microsoft.Extensions.Logging;

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
        return await Components.CreateStartedAsync(
            options, timeProvider, loggerFactory, static (o, t, l) => new KafkaTransport(o, t, l), static (transport, ct) => transport.ConnectAsync(ct).AsTask(), cancellationToken)
            .ConfigureAwait(false);
    }
}
