using Herald.RabbitMQ.Transport;
using Herald.Hosting;
using Herald.RabbitMQ;
using Herald.Transport;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Hosting;
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
        builder.Services.AddOptions<RabbitMqTransportOptions>().Configure(configure).ValidateOnStart();
        builder.Services.TryAddEnumerable(ServiceDescriptor.Singleton<IValidateOptions<RabbitMqTransportOptions>, RabbitMqTransportOptionsValidator>());
        builder.Services.TryAddEnumerable(ServiceDescriptor.Singleton<IHostedService, RabbitMqTransportStarter>());
        return builder.UseTransport(sp => new RabbitMqTransport(
            sp.GetRequiredService<IOptions<RabbitMqTransportOptions>>().Value,
            sp.GetService<TimeProvider>() ?? TimeProvider.System,
            sp.GetService<ILoggerFactory>() ?? NullLoggerFactory.Instance));
    }
}

internal sealed class RabbitMqTransportOptionsValidator : IValidateOptions<RabbitMqTransportOptions>
{
    public ValidateOptionsResult Validate(string? name, RabbitMqTransportOptions options)
    {
        var errors = options.Validate();
        return errors.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(errors);
    }
}

/// <summary>Connects the transport when the host starts, so send-only hosts also fail fast on a wrong address.</summary>
internal sealed class RabbitMqTransportStarter(IServiceProvider services) : IHostedService
{
    public async Task StartAsync(CancellationToken cancellationToken)
    {
        if (services.GetRequiredService<ITransport>() is RabbitMqTransport transport)
        {
            await transport.ConnectAsync(cancellationToken).ConfigureAwait(false);
        }
    }

    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;
}
