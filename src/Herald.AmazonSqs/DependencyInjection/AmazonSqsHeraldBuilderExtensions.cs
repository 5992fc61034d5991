using Herald.AmazonSqs.Transport;
using Herald.Hosting;
using Herald.Internal;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;

namespace Microsoft.Extensions.DependencyInjection;

/// <summary>Adds the Amazon SQS transport to Herald.</summary>
public static class AmazonSqsHeraldBuilderExtensions
{
    /// <summary>
    /// Uses Amazon SQS as this host's transport. The options are validated and SQS called once when the host starts, so a
    /// wrong region, endpoint or credentials fail the start with the endpoint named.
    /// </summary>
    public static HeraldBuilder UseAmazonSqs(this HeraldBuilder builder, Action<AmazonSqsTransportOptions> configure)
    {
        ArgumentNullException.ThrowIfNull(builder);
        ArgumentNullException.ThrowIfNull(configure);
        builder.Services.AddCheckedOptions(configure, static (options, problems) => options.Check(problems));
        return builder.UseStartedTransport(
            sp => new AmazonSqsTransport(
                sp.GetRequiredService<IOptions<AmazonSqsTransportOptions>>().Value,
                sp.GetService<TimeProvider>() ?? TimeProvider.System,
                sp.GetService<ILoggerFactory>() ?? NullLoggerFactory.Instance),
            static (transport, cancellationToken) => transport.ConnectAsync(cancellationToken));
    }
}
