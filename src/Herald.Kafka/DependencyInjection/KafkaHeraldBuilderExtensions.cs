using Herald.Hosting;
using Herald.Internal;
using Herald.Kafka.Transport;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;

namespace Microsoft.Extensions.DependencyInjection;

/// <summary>Adds the Kafka transport to Herald.</summary>
public static class KafkaHeraldBuilderExtensions
{
    /// <summary>
    /// Uses Kafka as this host's transport. The options are validated and the cluster reached when the host starts,
    /// so a wrong address fails the start with the brokers named.
    /// </summary>
    public static HeraldBuilder UseKafka(this HeraldBuilder builder, Action<KafkaTransportOptions> configure)
    {
        ArgumentNullException.ThrowIfNull(builder);
        ArgumentNullException.ThrowIfNull(configure);
        builder.Services.AddCheckedOptions(configure, static (options, problems) => problems.AddMessages(options.Validate()));

        // Connected when the host starts, so send-only hosts also fail fast on a wrong address.
        return builder.UseStartedTransport(
            sp => new KafkaTransport(
                sp.GetRequiredService<IOptions<KafkaTransportOptions>>().Value,
                sp.GetService<TimeProvider>() ?? TimeProvider.System,
                sp.GetService<ILoggerFactory>() ?? NullLoggerFactory.Instance)
            {
                // Resolved at the first rebalance, not here: an observer (a stream) may depend on what needs the transport.
                ObserversSource = sp.GetServices<IBrokerPartitionObserver>,
            },
            static (transport, cancellationToken) => transport.ConnectAsync(cancellationToken).AsTask());
    }
}
