using Herald.Internal;
using Herald.Transport;
using Microsoft.Extensions.Logging;

namespace Herald.AmazonSqs.Transport;

/// <summary>Creates the Amazon SQS transport without dependency injection (tests, tools, hand-wired hosts).</summary>
public static class AmazonSqsTransportFactory
{
    /// <summary>
    /// Validates the options, checks that SQS answers and returns the transport; throws a <see cref="HeraldException"/> naming
    /// the endpoint when it does not. Dispose the transport to stop its consumers (and its client, unless you gave one).
    /// </summary>
    public static async Task<ITransport> CreateAsync(
        AmazonSqsTransportOptions options,
        TimeProvider? timeProvider = null,
        ILoggerFactory? loggerFactory = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(options);
        return await Components.CreateStartedAsync(
            options, timeProvider, loggerFactory, static (o, t, l) => new AmazonSqsTransport(o, t, l), static (transport, ct) => transport.ConnectAsync(ct), cancellationToken)
            .ConfigureAwait(false);
    }
}
