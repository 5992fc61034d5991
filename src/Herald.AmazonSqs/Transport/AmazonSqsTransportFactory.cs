using Herald.Internal;
using Herald.Transport;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Herald.AmazonSqs.Transport;

/// <summary>Creates the Amazon SQS transport without dependency injection (tests, tools, hand-wired hosts).</summary>
public static class AmazonSqsTransportFactory
{
    /// <summary>
    /// Validates the options, checks that SQS answers and returns the transport; throws a <see cref="HeraldException"/> naming
    /// the endpoint when it does not. Dispose the transport to stop its consumers (and its client, unless you gave one).
    /// </summary>
    public static Task<ITransport> CreateAsync(
        AmazonSqsTransportOptions options,
        TimeProvider? timeProvider = null,
        ILoggerFactory? loggerFactory = null,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(options);
        var transport = new AmazonSqsTransport(options, timeProvider ?? TimeProvider.System, loggerFactory ?? NullLoggerFactory.Instance);
        return StartAsync(transport, cancellationToken);
    }

    private static async Task<ITransport> StartAsync(AmazonSqsTransport transport, CancellationToken cancellationToken) =>
        await Components.StartOrDisposeAsync(transport, static (t, ct) => t.ConnectAsync(ct), cancellationToken).ConfigureAwait(false);
}
