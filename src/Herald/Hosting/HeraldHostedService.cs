using Herald.EventSourcing.Upcasting;
using Herald.Handling;
using Herald.Handling.Pipeline;
using Herald.Internal;
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
/// handles, and consumes. On shutdown, in-flight messages finish (bounded by <see cref="HeraldOptions.ShutdownTimeout"/>)
/// while every other service still runs: the consumer stops in <see cref="StoppingAsync"/>, before any hosted service's
/// stop (the host stops them in the reverse order of registration, and AddHerald registers this one first, so the outbox
/// relay registered after it would otherwise stop before the handlers it relays for had finished).
/// </summary>
internal sealed class HeraldHostedService(IServiceProvider services, IOptions<HeraldOptions> options) : IHostedLifecycleService, IAsyncDisposable, IDisposable
{
    // Resolved with this service, not at its start: the container disposes singletons in the reverse order of their
    // creation, so this service's dispose (below) comes before the transport's, and needs nothing from the container.
    private readonly ITransport _transport = services.GetRequiredService<ITransport>();
    private readonly ILogger _logger = (services.GetService<ILoggerFactory>() ?? NullLoggerFactory.Instance).CreateLogger("Herald");
    private readonly EndpointConsumerStatus _status = services.GetRequiredService<EndpointConsumerStatus>();
    private ITransportConsumer? _consumer;
    private Task _watch = Task.CompletedTask;

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
        services.GetService<EventUpcasterRegistry>()?.ValidateAgainst(registry);
        var topics = handlers.MessageTypes.Select(registry.GetName).ToList();
        if (!settings.StartConsumer || topics.Count == 0)
        {
            // Said once, so a host that only sends (or one whose handlers were never registered) is seen as such: a send
            // without a route still goes to this endpoint's queue, and waits there for a host that consumes it.
            Log.NoConsumer(_logger, settings.EndpointName, settings.StartConsumer ? "it has no message handler" : "HeraldOptions.StartConsumer is false");
            return;
        }

        var transport = _transport;
        await transport.DeclareQueueAsync(settings.EndpointName, cancellationToken).ConfigureAwait(false);
        foreach (var topic in topics)
        {
            await transport.BindAsync(topic, settings.EndpointName, cancellationToken).ConfigureAwait(false);
        }

        var pipeline = services.GetRequiredService<EndpointPipelineFactory>().Create(settings.EndpointName);
        var consumerOptions = new ConsumerOptions { MaxConcurrency = settings.MaxConcurrency, Prefetch = Math.Max(settings.Prefetch, settings.MaxConcurrency) };
        var consumer = await transport.ConsumeAsync(settings.EndpointName, consumerOptions, pipeline.HandleAsync, cancellationToken).ConfigureAwait(false);
        _status.Clear();
        _consumer = consumer;
        Log.ConsumerStarted(_logger, settings.EndpointName, transport.Name, topics.Count, settings.MaxConcurrency);
        if (consumer is IConsumerCompletion completion)
        {
            _watch = WatchAsync(consumer, completion.Completion);
        }
    }

    /// <summary>
    /// Reports a consumer whose loop ended while the host had not stopped it (to the log, 1003, and the health checks), or
    /// failed once the host's stop had taken it (to the log only, 1004: the endpoint is stopping anyway, not Unhealthy).
    /// </summary>
    private async Task WatchAsync(ITransportConsumer consumer, Task completion)
    {
        try
        {
            await completion.ConfigureAwait(false);
            return;
        }
#pragma warning disable CA1031 // The reason is reported, not rethrown: nobody awaits this watch.
        catch (Exception e)
#pragma warning restore CA1031
        {
            // Still this host's consumer: not one its stop took (a stop's cancellation is not a failure, and the completion
            // is not faulted by one).
            if (Volatile.Read(ref _consumer) == consumer)
            {
                _status.Faulted(consumer.Queue, e);
                Log.ConsumerFaulted(_logger, e, consumer.Queue);
            }
            else
            {
                Log.ConsumerFailedWhileStopping(_logger, e, consumer.Queue);
            }
        }
    }

    public Task StartingAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public Task StartedAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    /// <summary>Stops the consumer, letting its in-flight handlers finish, before any hosted service stops.</summary>
    public Task StoppingAsync(CancellationToken cancellationToken) => StopAsync(cancellationToken);

    public Task StoppedAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public async Task StopAsync(CancellationToken cancellationToken)
    {
        // Taken, so a second stop does nothing and a start after the stop runs a new consumer.
        if (Interlocked.Exchange(ref _consumer, null) is not { } consumer)
        {
            return;
        }

        var watch = _watch;
        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        deadline.CancelAfter(options.Value.ShutdownTimeout);
        await consumer.StopAsync(deadline.Token).ConfigureAwait(false);

        // A stop within its time has seen the loop end, and the completion follows at once: waiting for its watch logs a
        // failure the loop met while stopping before the stop's own line, not after the host's last one. A stop cut short
        // does not wait: a loop still running is logged by its watch when it ends.
        await watch.WaitAsync(deadline.Token).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
        Log.ConsumerStopped(_logger, consumer.Queue);
    }

    /// <summary>
    /// Stops a consumer the host never stopped, as a stop would: a host whose start failed (a hosted service registered
    /// after Herald threw) does not call <see cref="StopAsync"/>, it only disposes, and the transport's dispose would cut
    /// the running handlers off without their grace.
    /// </summary>
    public async ValueTask DisposeAsync() => await StopAsync(CancellationToken.None).ConfigureAwait(false);

    public void Dispose() => DisposeAsync().AsTask().GetAwaiter().GetResult();
}
