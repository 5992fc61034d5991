using Herald.RabbitMQ.Transport;
using Herald.Hosting;
using Herald.RabbitMQ;
using Herald.Internal;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;

namespace Microsoft.Extensions.DependencyInjection;

/// <summary>Adds the RabbitMQ transport to Herald.</summary>
public static class RabbitMqHeraldBuilderExtensions
{
    /// <summary>
    /// Uses RabbitMQ as this host's transport. The options are validated and the broker connected when the host
    /// starts, so a wrong address fails the start with the host named.
    /// </summary>
    public static HeraldBuilder UseRabbitMq(this HeraldBuilder builder, Action<RabbitMqTransportOptions> configure)
    {
        ArgumentNullException.ThrowIfNull(builder);
        ArgumentNullException.ThrowIfNull(configure);
        builder.Services.AddCheckedOptions(configure, static (options, problems) => problems.AddMessages(options.Validate()));

        // Connected when the host starts, so send-only hosts also fail fast on a wrong address.
        return builder.UseStartedTransport(
            sp => new RabbitMqTransport(
                sp.GetRequiredService<IOptions<RabbitMqTransportOptions>>().Value,
                sp.GetService<TimeProvider>() ?? TimeProvider.System,
                sp.GetService<ILoggerFactory>() ?? NullLoggerFactory.Instance),
            (transport, cancellationToken) => transport.ConnectAsync(cancellationToken).AsTask());
    }
}
