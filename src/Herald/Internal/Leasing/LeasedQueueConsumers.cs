using System.Collections.Concurrent;
using Herald.Diagnostics;
using Herald.Transport;

namespace Herald.Internal;

/// <summary>
/// The consumers a leased-queue transport started: each gets the transport's <see cref="LeasedQueueSettings"/> under its own
/// name, and the transport stops the ones still running when it is disposed.
/// </summary>
/// <typeparam name="TMessage">The backend's claimed message.</typeparam>
/// <remarks>An extension point for Herald's adapter packages, not for application code; it may change in any release.</remarks>
public sealed class LeasedQueueConsumers<TMessage>
    where TMessage : LeasedMessage
{
    private readonly ConcurrentDictionary<LeasedQueueConsumer<TMessage>, byte> _running = new();
    private readonly LeasedQueueSettings _settings;

    /// <summary>Creates the set; every consumer it starts uses <paramref name="settings"/> with its own name.</summary>
    public LeasedQueueConsumers(LeasedQueueSettings settings)
    {
        ArgumentNullException.ThrowIfNull(settings);
        _settings = settings;
    }

    /// <summary>Starts a consumer of <paramref name="queue"/> over <paramref name="backend"/>, named <paramref name="name"/> in logs.</summary>
    public ITransportConsumer Start(ILeasedQueueBackend<TMessage> backend, string name, string queue, ConsumerOptions options, DeliveryHandler handler)
    {
        var consumer = new LeasedQueueConsumer<TMessage>(backend, queue, options, handler, _settings with { Name = name }, Forget);
        _running[consumer] = 0;
        QueueDepthGauge.Watch(consumer, queue, backend.CountAsync, new GaugeFreshness(_settings.TimeProvider, QueueDepthGauge.RefreshAfter, _settings.Logger, MetricNames.QueueMessages, queue));
        consumer.Start();
        return consumer;
    }

    /// <summary>Stops and disposes every consumer still running (those disposed on their own have left the set).</summary>
    public async ValueTask DisposeAllAsync()
    {
        foreach (var consumer in _running.Keys)
        {
            await consumer.DisposeAsync().ConfigureAwait(false);
        }
    }

    private void Forget(LeasedQueueConsumer<TMessage> consumer)
    {
        _running.TryRemove(consumer, out _);
        QueueDepthGauge.Forget(consumer);
    }
}
