using Herald.Handling;
using Herald.Handling.Pipeline;
using Herald.Messages;
using Herald.Transport;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Options;

namespace Herald.Hosting;

/// <summary>
/// Starts this host's endpoint with the host: declares its queue, binds it to the topic of every message type it
/// handles, and consumes. On shutdown, in-flight messages finish (bounded by <see cref="HeraldOptions.ShutdownTimeout"/>).
/// </summary>
internal sealed class HeraldHostedService(IServiceProvider services, IOptions<HeraldOptions> options) : IHostedService
{
    private ITransportConsumer? _consumer;

    public async Task StartAsync(CancellationToken cancellationToken)
    {
        if (_consumer is not null)
        {
            // Started already: a second consumer would run beside the first, and the stop would reach only one of them.
            return;
        }

        var settings = options.Value;
        var handlers = services.GetRequiredService<HandlerRegistry>();
        var registry = services.GetRequiredService<MessageTypeRegistry>();
        var topics = handlers.MessageTypes.Select(registry.GetName).ToList();
        if (!settings.StartConsumer || topics.Count == 0)
        {
            return;
        }

        var transport = services.GetRequiredService<ITransport>();
        var loggerFactory = services.GetService<ILoggerFactory>() ?? NullLoggerFactory.Instance;
        var logger = loggerFactory.CreateLogger("Herald");
        await transport.DeclareQueueAsync(settings.EndpointName, cancellationToken).ConfigureAwait(false);
        foreach (var topic in topics)
        {
            await transport.BindAsync(topic, settings.EndpointName, cancellationToken).ConfigureAwait(false);
        }

        var pipeline = services.GetRequiredService<EndpointPipelineFactory>().Create(settings.EndpointName);
        var consumerOptions = new ConsumerOptions { MaxConcurrency = settings.MaxConcurrency, Prefetch = Math.Max(settings.Prefetch, settings.MaxConcurrency) };
        _consumer = await transport.ConsumeAsync(settings.EndpointName, consumerOptions, pipeline.HandleAsync, cancellationToken).ConfigureAwait(false);
        Log.ConsumerStarted(logger, settings.EndpointName, transport.Name, topics.Count, settings.MaxConcurrency);
    }

    public async Task StopAsync(CancellationToken cancellationToken)
    {
        // Taken, so a second stop does nothing and a start after the stop runs a new consumer.
        if (Interlocked.Exchange(ref _consumer, null) is not { } consumer)
        {
            return;
        }

        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        deadline.CancelAfter(options.Value.ShutdownTimeout);
        await consumer.StopAsync(deadline.Token).ConfigureAwait(false);
        var logger = (services.GetService<ILoggerFactory>() ?? NullLoggerFactory.Instance).CreateLogger("Herald");
        Log.ConsumerStopped(logger, consumer.Queue);
    }
}
