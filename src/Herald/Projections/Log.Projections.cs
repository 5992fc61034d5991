using Microsoft.Extensions.Logging;

namespace Herald.Hosting;

/// <summary>The projection runners' log messages (event ids 1400-1499).</summary>
internal static partial class Log
{
    [LoggerMessage(1400, LogLevel.Information, "Projection {Projection} runs here from position {Position} (generation {Generation})")]
    public static partial void ProjectionStarted(ILogger logger, string projection, long position, int generation);

    [LoggerMessage(1401, LogLevel.Error, "Projection {Projection} stopped on a failure; it starts again from its checkpoint in {Delay}")]
    public static partial void ProjectionFailed(ILogger logger, Exception exception, string projection, TimeSpan delay);

    [LoggerMessage(1402, LogLevel.Information, "Projection {Projection} rebuild into generation {Generation} started")]
    public static partial void ProjectionRebuildStarted(ILogger logger, string projection, int generation);

    [LoggerMessage(1403, LogLevel.Information, "Projection {Projection} rebuilt: generation {Generation} serves reads from position {Position}")]
    public static partial void ProjectionRebuilt(ILogger logger, string projection, int generation, long position);

    [LoggerMessage(1404, LogLevel.Warning, "Projection {Projection} is stalled at position {Position}, {Lag} events behind the head")]
    public static partial void ProjectionStalled(ILogger logger, string projection, long position, long lag);

    [LoggerMessage(1405, LogLevel.Debug, "Projection {Projection} skipped position {Position}: another runner applied it first")]
    public static partial void ProjectionCheckpointConflict(ILogger logger, string projection, long position);

    [LoggerMessage(1407, LogLevel.Warning, "Reading the projections' status failed; the next try is in {Delay}")]
    public static partial void ProjectionStatusFailed(ILogger logger, Exception exception, TimeSpan delay);

    [LoggerMessage(1408, LogLevel.Warning, "A batch of {Count} events (positions {First} to {Last}) of {Subscription} failed and was rolled back; its events run again one by one")]
    public static partial void BatchFailed(ILogger logger, Exception exception, string subscription, int count, long first, long last);

    [LoggerMessage(1409, LogLevel.Information, "Projection {Projection} runs on another node: asked its leader to rebuild it (request {Request})")]
    public static partial void ProjectionRebuildRequested(ILogger logger, string projection, long request);

    [LoggerMessage(1410, LogLevel.Error, "Projection {Projection} could not be rebuilt as another node asked; the live generation still serves")]
    public static partial void ProjectionRebuildFailed(ILogger logger, Exception exception, string projection);

    [LoggerMessage(1411, LogLevel.Warning, "Projection {Projection} runs generation {Generation}, but generation {Active} serves reads (switched by another runner); it starts again on that one")]
    public static partial void ProjectionGenerationSwitchedElsewhere(ILogger logger, string projection, int generation, int active);

    [LoggerMessage(1406, LogLevel.Warning, "Projection {Projection} could not drop generation {Generation} of table {Table}; it is left in place")]
    public static partial void ProjectionDropFailed(ILogger logger, Exception exception, string projection, int generation, string table);
}
