using Microsoft.Extensions.Logging;

namespace Herald.Testing;

/// <summary>Herald.Testing's log messages, with stable event ids (7000-7999).</summary>
internal static partial class Log
{
    [LoggerMessage(7001, LogLevel.Debug, "Test harness: {Destination} got {MessageType} {MessageId} ({Kind})")]
    public static partial void Dispatched(ILogger logger, string destination, string messageType, Guid messageId, string kind);

    [LoggerMessage(7002, LogLevel.Debug, "Test harness: endpoint '{Endpoint}' settled {MessageType} {MessageId} as {Outcome} (delivery {DeliveryAttempt})")]
    public static partial void Settled(ILogger logger, string endpoint, string messageType, Guid messageId, string outcome, int deliveryAttempt);

    [LoggerMessage(7003, LogLevel.Debug, "Test harness: saga '{Saga}' instance '{SagaId}' {Kind} of step '{Step}' (run {Attempt}) {Result}")]
    public static partial void SagaStepObserved(ILogger logger, string saga, string sagaId, string kind, string step, int attempt, string result);
}
