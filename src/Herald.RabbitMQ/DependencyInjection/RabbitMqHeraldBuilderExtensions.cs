using Herald.RabbitMQ.Transport;
using Herald.Hosting;
using Herald.RabbitMQ;
using Herald.Internal;

namespace Microsoft.Extensions.DependencyInjection;

/// <summary>Adds the RabbitMQ transport to Herald.</summary>
public static class RabbitMqHeraldBuilderExtensions
{
    /// <summary>
    /// Uses RabbitMQ as this host's transport. The options are validated and the broker connected when the host
    /// starts, so a wrong address fails the start with the host named.
    /// </summary>
    public static HeraldBuilder UseRabbitMq(this HeraldBuilder builder, Action<RabbitMqTransportOptions> configure) =>
        builder.UseStartedTransport<RabbitMqTransportOptions, RabbitMqTransport>(
            configure,
            static (options, problems) => problems.AddMessages(options.Validate()),
            static (options, timeProvider, loggerFactory) => new RabbitMqTransport(options, timeProvider, loggerFactory),
            static (transport, cancellationToken) => transport.ConnectAsync(cancellationToken).AsTask());
}
