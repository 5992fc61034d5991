using Herald.EventSourcing.Subscriptions;
using Herald.Hosting;
using Herald.Transport;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace Herald.EventSourcing.Publishing;

/// <summary>
/// Publishes every stored event to the topic of its type, in global-log order, from a checkpointed catch-up
/// subscription: the store is the outbox, so an event is published if and only if its append committed (at least
/// once; consumers deduplicate by message id). The envelope published is the one recorded.
/// </summary>
internal sealed partial class StoredEventPublisher(
    IEventStore store,
    ICheckpointStore checkpoints,
    ITransport transport,
    TimeProvider timeProvider,
    IOptions<EventPublishingOptions> options,
    ILogger<StoredEventPublisher> logger) : IHostedService, IAsyncDisposable
{
    private EventSubscription? _subscription;
    private CancellationTokenSource? _stopping;

    public async Task StartAsync(CancellationToken cancellationToken)
    {
        var settings = options.Value;
        _stopping = new CancellationTokenSource();
        _subscription = await EventSubscription.StartNewAsync(
            store,
            checkpoints,
            PublishAsync,
            new EventSubscriptionOptions { SubscriptionId = settings.SubscriptionId, Filter = settings.Filter },
            cancellationToken).ConfigureAwait(false);
    }

    public async Task StopAsync(CancellationToken cancellationToken)
    {
        if (_stopping is not null)
        {
            await _stopping.CancelAsync().ConfigureAwait(false);
        }

        if (_subscription is not null)
        {
            await _subscription.StopAsync(cancellationToken).ConfigureAwait(false);
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (_subscription is not null)
        {
            await _subscription.DisposeAsync().ConfigureAwait(false);
        }

        _stopping?.Dispose();
    }

    private async ValueTask PublishAsync(RecordedEvent recorded, CancellationToken cancellationToken)
    {
        var settings = options.Value;
        var delay = settings.RetryDelay;
        using var linked = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, _stopping!.Token);
        for (var attempt = 1; ; attempt++)
        {
            try
            {
                await transport.PublishAsync(recorded.EventType, recorded.Envelope, options: null, linked.Token).ConfigureAwait(false);
                return;
            }
            catch (Exception ex) when (ex is not OperationCanceledException)
            {
                // Never skip a stored event: keep trying (the checkpoint stays before it) until the transport takes it.
                LogPublishFailed(logger, ex, recorded.EventType, recorded.Position, attempt, delay);
                await Task.Delay(delay, timeProvider, linked.Token).ConfigureAwait(false);
                delay = TimeSpan.FromTicks(Math.Min(delay.Ticks * 2, settings.MaxRetryDelay.Ticks));
            }
        }
    }

    [LoggerMessage(1101, LogLevel.Warning, "Publishing stored event {EventType} at position {Position} failed (attempt {Attempt}); trying again in {Delay}")]
    private static partial void LogPublishFailed(ILogger logger, Exception exception, string eventType, long position, int attempt, TimeSpan delay);
}
