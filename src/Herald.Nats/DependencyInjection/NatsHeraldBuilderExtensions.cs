using Herald.Hosting;
using Herald.Internal;
using Herald.Nats.Transport;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;

namespace Microsoft.Extensions.DependencyInjection;

/// <summary>Adds the NATS JetStream transport to Herald.</summary>
public static class NatsHeraldBuilderExtensions
{
    /// <summary>
    /// Uses NATS JetStream as this host's transport. The options are validated, the server connected and the configured
    /// streams declared when the host starts, so a wrong address or an impossible stream fails the start.
    /// </summary>
    public static HeraldBuilder UseNats(this HeraldBuilder builder, Action<NatsTransportOptions> configure)
    {
        ArgumentNullException.ThrowIfNull(builder);
        ArgumentNullException.ThrowIfNull(configure);
        builder.Services.AddCheckedOptions(configure, static (options, problems) => options.Check(problems));
        return builder.UseStartedTransport(
            sp => new NatsTransport(
                sp.GetRequiredService<IOptions<NatsTransportOptions>>().Value,
                sp.GetService<TimeProvider>() ?? TimeProvider.System,
                sp.GetService<ILoggerFactory>() ?? NullLoggerFactory.Instance),
            (transport, cancellationToken) => transport.ConnectAsync(cancellationToken).AsTask());
    }
}
