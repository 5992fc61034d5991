using Microsoft.Extensions.Logging;

namespace Herald.Internal;

/// <summary>
/// The log messages of events every transport adapter logs alike, declared once so that one event has one id whichever
/// transport logs it (event ids 1600-1699; the last two digits are those the RabbitMQ and NATS transports used before,
/// 5001/8001 → 1601 and so on). Each is logged to the category of the adapter that calls it.
/// </summary>
/// <remarks>An extension point for Herald's adapter packages, not for application code; it may change in any release.</remarks>
public static partial class AdapterLog
{
    /// <summary>The adapter reached its server at <paramref name="endpoint"/> when it started.</summary>
    [LoggerMessage(1601, LogLevel.Information, "Connected to {Broker} at {Endpoint}")]
    public static partial void Connected(ILogger logger, string broker, string endpoint);

    /// <summary>A consumer of <paramref name="queue"/> stopped.</summary>
    [LoggerMessage(1611, LogLevel.Information, "Stopped consuming '{Queue}'")]
    public static partial void ConsumerStopped(ILogger logger, string queue);

    /// <summary>A stop of <paramref name="queue"/>'s consumer went on without handlers that ignored their cancellation.</summary>
    [LoggerMessage(1612, LogLevel.Warning, "Stopping the consumer of '{Queue}' abandoned {Count} handler(s) that went on after their cancellation; their messages are not settled and come back to the queue")]
    public static partial void HandlersAbandoned(ILogger logger, string queue, int count);

    /// <summary>A message of <paramref name="queue"/> could not be decoded; it reaches the pipeline with its decode failure, which dead-letters it.</summary>
    [LoggerMessage(1620, LogLevel.Warning, "A message on '{Queue}' could not be decoded; it goes to the dead letters as undecodable: {Reason}")]
    public static partial void Undecodable(ILogger logger, string queue, string reason);

    /// <summary>A message of <paramref name="queue"/> that failed before it reached the pipeline could not be moved to the transport's own dead letters.</summary>
    [LoggerMessage(1621, LogLevel.Error, "A message of '{Queue}' that failed before it reached the pipeline could not be moved to the transport's own dead letters either; the transport delivers it again")]
    public static partial void UnreceivedDeadLetterFailed(ILogger logger, Exception exception, string queue);

    /// <summary>Receiving a message of <paramref name="queue"/> failed before it reached the pipeline; it goes to the transport's own dead letters.</summary>
    [LoggerMessage(1622, LogLevel.Error, "Receiving a message from '{Queue}' failed before it reached the pipeline; it is moved to the transport's own dead letters, to be drained into the dead-letter store")]
    public static partial void ReceiveFailed(ILogger logger, Exception exception, string queue);

    /// <summary>Reading the counts of <paramref name="queue"/> for its gauges failed; the gauges keep the last counts.</summary>
    [LoggerMessage(1641, LogLevel.Debug, "Reading the counts of queue '{Queue}' for its gauges failed; the last counts stay")]
    public static partial void GaugeReadFailed(ILogger logger, Exception exception, string queue);

    /// <summary>The value <paramref name="subject"/> of the gauge <paramref name="gauge"/> could not be refreshed for <paramref name="staleAfter"/>; it is not reported until it is.</summary>
    [LoggerMessage(1642, LogLevel.Warning, "The gauge {Gauge} could not refresh its value for '{Subject}' for {StaleAfter}; it reports nothing for it until a refresh succeeds")]
    public static partial void GaugeStale(ILogger logger, string gauge, string subject, TimeSpan staleAfter);
}
