using Microsoft.Extensions.Logging;

namespace Herald.AmazonSqs;

/// <summary>The Amazon SQS transport's log messages, with stable event ids (9000-9999).</summary>
internal static partial class Log
{
    [LoggerMessage(9001, LogLevel.Information, "Amazon SQS at {Endpoint} answers")]
    public static partial void Connected(ILogger logger, string endpoint);

    [LoggerMessage(9020, LogLevel.Warning, "A message on SQS queue '{Queue}' could not be decoded; it goes to the dead letters as undecodable: {Reason}")]
    public static partial void Undecodable(ILogger logger, string queue, string reason);

    [LoggerMessage(9030, LogLevel.Debug, "Reading the approximate counts of SQS queue '{Queue}' for its gauges failed; the last counts stay")]
    public static partial void GaugeReadFailed(ILogger logger, Exception exception, string queue);
}
