using Herald.AmazonSqs.Transport;
using Herald.Hosting;
using Herald.Internal;

namespace Microsoft.Extensions.DependencyInjection;

/// <summary>Adds the Amazon SQS transport to Herald.</summary>
public static class AmazonSqsHeraldBuilderExtensions
{
    /// <summary>
    /// Uses Amazon SQS as this host's transport. The options are validated and SQS called once when the host starts, so a
    /// wrong region, endpoint or credentials fail the start with the endpoint named.
    /// </summary>
    public static HeraldBuilder UseAmazonSqs(this HeraldBuilder builder, Action<AmazonSqsTransportOptions> configure) =>
        builder.UseStartedTransport<AmazonSqsTransportOptions, AmazonSqsTransport>(
            configure,
            static (options, problems) => options.Check(problems),
            static (options, timeProvider, loggerFactory) => new AmazonSqsTransport(options, timeProvider, loggerFactory),
            static (transport, cancellationToken) => transport.ConnectAsync(cancellationToken));
}
