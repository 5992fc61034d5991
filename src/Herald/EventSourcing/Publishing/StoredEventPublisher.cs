using Herald.EventSourcing.Subscriptions;
using Herald.Hosting;
using Herald.Reliability.DeadLetters;
using Herald.Transport;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace Herald.EventSourcing.Publishing;

/// <summary>
/// Publishes every stored event to the topic of its type, in global-log order, from a checkpointed catch-up
/// subscription: the store is the outbox, so an event is published if and only if its append committed (at least
/// once; consumers deduplicate by message id). The envelope published is the one recorded. A failure the transport
/// calls permanent (see <see cref="SendChecks"/>) moves the event to the dead letters, so it cannot stop the log.
/// </summary>
internal sealed partial class StoredEventPublisher(
    IEventStore store,
    ICheckpointStore checkpoints,
    ITransport transport,
    IDeadLetterStore deadLetters,
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
                if (SendChecks.IsPermanent(ex, transport.Capabilities) && await TryDeadLetterAsync(recorded, ex, attempt, linked.Token).ConfigureAwait(false))
                {
                    // Retrying cannot help: the event is kept in the dead letters (and in the store), and the log goes on.
                    return;
                }

                // Never skip a stored event: keep trying (the checkpoint stays before it) until the transport takes it.
                LogPublishFailed(logger, ex, recorded.EventType, recorded.Position, attempt, delay);
                await Task.Delay(delay, timeProvider, linked.Token).ConfigureAwait(false);
                delay = TimeSpan.FromTicks(Math.Min(delay.Ticks * 2, settings.MaxRetryDelay.Ticks));
            }
        }
    }

    private async ValueTask<bool> TryDeadLetterAsync(RecordedEvent recorded, Exception exception, int attempt, CancellationToken cancellationToken)
    {
        var deadLetter = SendRejections.Create(recorded.Envelope, recorded.EventType, exception, timeProvider.GetUtcNow(), attempt);
        try
        {
            await deadLetters.AddAsync(deadLetter, cancellationToken).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is not OperationCanceledException)
        {
            // Not recorded: the event is published again after the back-off, like any other failure.
            LogDeadLetterFailed(logger, ex, recorded.EventType, recorded.Position);
            return false;
        }

        LogPublishRejected(logger, exception, recorded.EventType, recorded.Position);
        return true;
    }

    [LoggerMessage(1102, LogLevel.Error, "The transport refuses stored event {EventType} at position {Position} for good; it is moved to the dead letters")]
    private static partial void LogPublishRejected(ILogger logger, Exception exception, string eventType, long position);

    [LoggerMessage(1103, LogLevel.Error, "Stored event {EventType} at position {Position} could not be moved to the dead letters; it is published again after the back-off")]
    private static partial void LogDeadLetterFailed(ILogger logger, Exception exception, string eventType, long position);

    [LoggerMessage(1101, LogLevel.Warning, "Publishing stored event {EventType} at position {Position} failed (attempt {Attempt}); trying again in {Delay}")]
    private static partial void LogPublishFailed(ILogger logger, Exception exception, string eventType, long position, int attempt, TimeSpan delay);
}
