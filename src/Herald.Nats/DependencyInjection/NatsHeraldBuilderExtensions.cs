using Herald.Hosting;
using Herald.Internal;
using Herald.Nats.Transport;

namespace Microsoft.Extensions.DependencyInjection;

/// <summary>Adds the NATS JetStream transport to Herald.</summary>
public static class NatsHeraldBuilderExtensions
{
    /// <summary>
    /// Uses NATS JetStream as this host's transport. The options are validated, the server connected and the configured
    /// streams declared when the host starts, so a wrong address or an impossible stream fails the start.
    /// </summary>
    public static HeraldBuilder UseNats(this HeraldBuilder builder, Action<NatsTransportOptions> configure) =>
        builder.UseStartedTransport<NatsTransportOptions, NatsTransport>(
            configure,
            static (options, problems) => options.Check(problems),
            static (options, timeProvider, loggerFactory) => new NatsTransport(options, timeProvider, loggerFactory),
            static (transport, cancellationToken) => transport.ConnectAsync(cancellationToken).AsTask());
}
