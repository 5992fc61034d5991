using Herald.Hosting;
using Herald.Internal;
using Herald.Kafka.Transport;

namespace Microsoft.Extensions.DependencyInjection;

/// <summary>Adds the Kafka transport to Herald.</summary>
public static class KafkaHeraldBuilderExtensions
{
    /// <summary>
    /// Uses Kafka as this host's transport. The options are validated and the cluster reached when the host starts,
    /// so a wrong address fails the start with the brokers named.
    /// </summary>
    public static HeraldBuilder UseKafka(this HeraldBuilder builder, Action<KafkaTransportOptions> configure) =>
        builder.UseStartedTransport<KafkaTransportOptions, KafkaTransport>(
            configure,
            static (options, problems) => problems.AddMessages(options.Validate()),
            static (options, timeProvider, loggerFactory) => new KafkaTransport(options, timeProvider, loggerFactory),
            static (transport, cancellationToken) => transport.ConnectAsync(cancellationToken).AsTask());
}
