using Herald.Sagas;
using Microsoft.Extensions.Logging;

namespace Herald.Hosting;

/// <summary>The saga orchestrator's log messages (event ids 1300-1399).</summary>
internal static partial class Log
{
    [LoggerMessage(1300, LogLevel.Debug, "Saga {Saga} instance {SagaId} started")]
    public static partial void SagaStarted(ILogger logger, string saga, string sagaId);

    [LoggerMessage(1301, LogLevel.Information, "Saga {Saga} instance {SagaId} resumed ({Status} at {State})")]
    public static partial void SagaResumed(ILogger logger, string saga, string sagaId, SagaStatus status, string? state);

    [LoggerMessage(1302, LogLevel.Debug, "Saga {Saga} instance {SagaId} ended {Status}")]
    public static partial void SagaEnded(ILogger logger, string saga, string sagaId, SagaStatus status);

    [LoggerMessage(1310, LogLevel.Warning, "Step {Step} of saga {Saga} instance {SagaId} failed after its retries; compensating the completed steps")]
    public static partial void SagaStepFailed(ILogger logger, Exception exception, string saga, string sagaId, string step);

    [LoggerMessage(1311, LogLevel.Information, "Step {Step} of saga {Saga} instance {SagaId} (compensation: {Compensation}) failed on attempt {Attempt}; retrying after {Delay}")]
    public static partial void SagaStepRetrying(ILogger logger, Exception exception, string saga, string sagaId, string step, bool compensation, int attempt, TimeSpan delay);

    [LoggerMessage(1312, LogLevel.Error, "Compensation of step {Step} of saga {Saga} instance {SagaId} failed after its retries")]
    public static partial void SagaCompensationFailed(ILogger logger, Exception exception, string saga, string sagaId, string step);

    [LoggerMessage(1313, LogLevel.Error, "Saga {Saga} instance {SagaId} is parked as failed: {Error}")]
    public static partial void SagaParked(ILogger logger, string saga, string sagaId, string error);

    [LoggerMessage(1314, LogLevel.Information, "Saga {Saga} instance {SagaId} was moved on by another runner; this one stops")]
    public static partial void SagaTakenOver(ILogger logger, Exception exception, string saga, string sagaId);

    [LoggerMessage(1315, LogLevel.Warning, "Saga {Saga} instance {SagaId} was taken over by another runner while this one ran its step (a renewal of its freshness found it saved since): the step is cancelled and its outcome not committed")]
    public static partial void SagaLeaseLost(ILogger logger, string saga, string sagaId);

    [LoggerMessage(1316, LogLevel.Warning, "Renewing the freshness of saga {Saga} instance {SagaId} while its step runs failed; trying again soon")]
    public static partial void SagaLeaseRenewalFailed(ILogger logger, Exception exception, string saga, string sagaId);

    [LoggerMessage(1317, LogLevel.Warning, "Saga {Saga} instance {SagaId} went without a save for {StaleAfter} while its step ran, its renewals failing (the store could not be reached): another node's sweep may take it over, so the step is cancelled and its outcome not committed")]
    public static partial void SagaLeaseRanOut(ILogger logger, string saga, string sagaId, TimeSpan staleAfter);

    [LoggerMessage(1320, LogLevel.Error, "Resuming saga {Saga} instance {SagaId} failed; it stays unfinished until the next sweep")]
    public static partial void SagaResumeFailed(ILogger logger, Exception exception, string saga, string sagaId);

    [LoggerMessage(1321, LogLevel.Debug, "Saga resume sweep: {Due} instance(s) of saga {Saga} driven by no runner")]
    public static partial void SagaSweep(ILogger logger, string saga, int due);

    [LoggerMessage(1322, LogLevel.Information, "Saga {Saga} instance {SagaId} was not resumed: it was saved at {SavedAt}, within SagaOptions.StaleAfter, so another node may be running it; it is resumed once it goes that long without a save")]
    public static partial void SagaResumeLeftLive(ILogger logger, string saga, string sagaId, DateTimeOffset savedAt);

    [LoggerMessage(1330, LogLevel.Information, "Saga {Saga} instance {SagaId} ignored {EventType}: {Reason}")]
    public static partial void SagaEventIgnored(ILogger logger, string saga, string sagaId, string eventType, string reason);

    [LoggerMessage(1331, LogLevel.Error, "Saga {Saga} instance {SagaId} holds timeout {Timeout} ({TimeoutId}), but sending its message after the commit failed: the resume sweep sends it again once it is SagaOptions.StaleAfter past its due time, or reschedule it (SagaTimeouts.RescheduleAsync)")]
    public static partial void SagaTimeoutNotSent(ILogger logger, Exception exception, string saga, string sagaId, string timeout, Guid timeoutId);

    [LoggerMessage(1332, LogLevel.Error, "Saga {Saga} instance {SagaId} moved on, but sending its {MessageType} after the commit failed; configure an outbox so a transition's messages commit with it")]
    public static partial void SagaMessageNotSent(ILogger logger, Exception exception, string saga, string sagaId, string messageType);

    [LoggerMessage(1333, LogLevel.Warning, "Saga {Saga} instance {SagaId} still held timeout {Timeout} ({TimeoutId}) well past its due time {DueAt}; its message was sent again (lost in a crash or a failed send after its transition committed, or only late)")]
    public static partial void SagaTimeoutResent(ILogger logger, string saga, string sagaId, string timeout, Guid timeoutId, DateTimeOffset dueAt);

    [LoggerMessage(1334, LogLevel.Warning, "Saga {Saga} instance {SagaId} holds timeout {Timeout} ({TimeoutId}) well past its due time, but sending it again failed; the next sweep tries again")]
    public static partial void SagaTimeoutResendFailed(ILogger logger, Exception exception, string saga, string sagaId, string timeout, Guid timeoutId);

    [LoggerMessage(1335, LogLevel.Error, "Saga {Saga} instance {SagaId} still holds timeout {Timeout} ({TimeoutId}) well after the sweep sent it again at {ResentAt}: its delivery must have failed (see the dead letters); it is not sent again, retry its dead letter or reschedule it (SagaTimeouts.RescheduleAsync)")]
    public static partial void SagaTimeoutDeliveryFailed(ILogger logger, string saga, string sagaId, string timeout, Guid timeoutId, DateTimeOffset resentAt);
}
