using Confluent.Kafka;
using Microsoft.Extensions.Logging;

namespace Herald.Kafka;

/// <summary>The Kafka transport's log messages, with stable event ids (6000-6999).</summary>
internal static partial class Log
{
    [LoggerMessage(6002, LogLevel.Warning, "Kafka client of '{Owner}' reported {Code}: {Reason}")]
    public static partial void ClientError(ILogger logger, string owner, ErrorCode code, string reason);

    [LoggerMessage(6003, LogLevel.Debug, "librdkafka {Client} [{Facility}]: {Message}")]
    public static partial void ClientLog(ILogger logger, string client, string facility, string message);

    [LoggerMessage(6004, LogLevel.Information, "Created Kafka topic '{Topic}' with {Partitions} partitions")]
    public static partial void TopicCreated(ILogger logger, string topic, int partitions);

    [LoggerMessage(6005, LogLevel.Warning, "Could not start group '{GroupId}' at the end of '{Topic}' when binding ({Reason}); it starts where its reset policy says")]
    public static partial void BindingStartNotSet(ILogger logger, string groupId, string topic, string reason);

    [LoggerMessage(6010, LogLevel.Information, "Consuming '{Queue}' on Kafka as group '{GroupId}' (prefetch {Prefetch}, concurrency {Concurrency})")]
    public static partial void ConsumerStarted(ILogger logger, string queue, string groupId, int prefetch, int concurrency);

    [LoggerMessage(6011, LogLevel.Information, "Consumer of '{Queue}' was given partitions {Partitions}")]
    public static partial void PartitionsAssigned(ILogger logger, string queue, string partitions);

    [LoggerMessage(6012, LogLevel.Information, "Consumer of '{Queue}' gives up partitions {Partitions} (lost: {Lost})")]
    public static partial void PartitionsRevoked(ILogger logger, string queue, string partitions, bool lost);

    [LoggerMessage(6013, LogLevel.Warning, "Consumer of '{Queue}' had no partitions after {Timeout}; it goes on waiting for the group")]
    public static partial void NoAssignmentYet(ILogger logger, string queue, TimeSpan timeout);

    [LoggerMessage(6014, LogLevel.Warning, "Consuming '{Queue}' failed ({Code}: {Reason}); polling goes on")]
    public static partial void ConsumeFailed(ILogger logger, string queue, ErrorCode code, string reason);

    [LoggerMessage(6015, LogLevel.Error, "The poll loop of '{Queue}' failed; the consumer stopped")]
    public static partial void PollFailed(ILogger logger, Exception exception, string queue);

    [LoggerMessage(6016, LogLevel.Warning, "Committing offsets of '{Queue}' failed ({Code}: {Reason}); the next commit carries them")]
    public static partial void CommitFailed(ILogger logger, string queue, ErrorCode code, string reason);

    [LoggerMessage(6017, LogLevel.Warning, "Record {Position} of '{Queue}' cannot be decoded ({Reason}); it goes to the dead letters")]
    public static partial void Undecodable(ILogger logger, string queue, string position, string reason);

    [LoggerMessage(6018, LogLevel.Warning, "The nack or dead-letter copy of message {MessageId} of '{Queue}' ({Partition}) failed; it is made again in {Backoff}")]
    public static partial void SettlementCopyFailed(ILogger logger, Exception? exception, string queue, Guid messageId, string partition, TimeSpan backoff);

    [LoggerMessage(6019, LogLevel.Error, "Kafka keeps refusing the redelivery copy of message {MessageId} of '{Queue}' ({Partition}); it goes to the dead letters")]
    public static partial void RedeliveryRefused(ILogger logger, Exception? exception, string queue, Guid messageId, string partition);

    // 6020 (a retry record without a target, skipped) is retired: such a record is dead-lettered now (6022).

    [LoggerMessage(6021, LogLevel.Warning, "Relaying a record of '{Topic}' to '{Target}' failed; it is tried again in {Backoff}")]
    public static partial void RelayFailed(ILogger logger, Exception exception, string topic, string target, TimeSpan backoff);

    [LoggerMessage(6022, LogLevel.Error, "Record {Position} of retry topic '{Topic}' cannot be relayed ({Reason}); it went to the dead letters")]
    public static partial void RelayRefused(ILogger logger, Exception? exception, string topic, string position, string reason);

    [LoggerMessage(6023, LogLevel.Error, "Record {Position} of retry topic '{Topic}' cannot be relayed ({Reason}) and could not be dead-lettered to '{DeadLetterTopic}' either; it stays in the retry topic (with the records behind it in its partition) and is tried again in {Backoff}: create the topic, or turn CreateTopics on")]
    public static partial void RelayDeadLetterFailed(ILogger logger, Exception exception, string topic, string position, string reason, string deadLetterTopic, TimeSpan backoff);

    [LoggerMessage(6024, LogLevel.Warning, "The dead-letter store refused record {Position} of '{Topic}' ({Refusals} times so far) while it took others; the record was copied to the end of its partition so the ones behind it drain")]
    public static partial void DeadLetterCopiedToTheEnd(ILogger logger, string topic, string position, int refusals);

    [LoggerMessage(6025, LogLevel.Error, "Kafka refused a dead-letter copy for '{Topic}' as too large; it is dead-lettered without its body of {Bytes} bytes")]
    public static partial void DeadLetterBodyLeftOut(ILogger logger, Exception exception, string topic, int bytes);

    [LoggerMessage(6026, LogLevel.Error, "The poll loop of '{Queue}' failed; its client leaves the group and a new one resumes polling in {Backoff}")]
    public static partial void PollFailedResuming(ILogger logger, Exception exception, string queue, TimeSpan backoff);

    [LoggerMessage(6027, LogLevel.Information, "The consumer of '{Queue}' resumed polling with a new client in group '{GroupId}'")]
    public static partial void PollResumed(ILogger logger, string queue, string groupId);

    [LoggerMessage(6028, LogLevel.Warning, "The failed client of '{Queue}' did not leave the group cleanly; the group hands its partitions on once it times out")]
    public static partial void FailedClientNotClosed(ILogger logger, Exception exception, string queue);

    [LoggerMessage(6029, LogLevel.Error, "Kafka refused a dead-letter copy for '{Topic}' as too large; it is dead-lettered without its body and {LeftOut}")]
    public static partial void DeadLetterHeadersLeftOut(ILogger logger, Exception exception, string topic, string leftOut);

    [LoggerMessage(6030, LogLevel.Warning, "The final commit of '{Queue}' at stop failed ({Code}: {Reason}); the records handled since the last commit may be handled again by the partitions' next owner")]
    public static partial void FinalCommitFailed(ILogger logger, string queue, ErrorCode code, string reason);

    [LoggerMessage(6031, LogLevel.Warning, "Committing the offsets of '{Queue}' for the partitions it gives up ({Partitions}) failed ({Code}: {Reason}); the records handled since their last commit may be handled again by their next owner")]
    public static partial void RevocationCommitFailed(ILogger logger, string queue, string partitions, ErrorCode code, string reason);

    [LoggerMessage(6032, LogLevel.Warning, "Reading the committed offsets of '{Queue}' for the partitions it was given failed ({Code}: {Reason}); the client still starts them from the group's offsets, but their lag gauge counts from the log start until this consumer commits them")]
    public static partial void ReadCommittedFailed(ILogger logger, string queue, ErrorCode code, string reason);

    [LoggerMessage(6033, LogLevel.Warning, "The handlers of '{Queue}' partition {Partition} did not finish within the revocation timeout ({Timeout}): {Unfinished} record(s) taken from it are abandoned, and its next owner reads it again from {From}, handling again whatever after that offset was handled here")]
    public static partial void RevocationTimedOut(ILogger logger, string queue, string partition, TimeSpan timeout, int unfinished, string from);

    [LoggerMessage(6034, LogLevel.Information, "Stopping '{Queue}' leaves {Held} record(s) of partition {Partition} to its next owner (not started when the stop began, not settled, or abandoned): it reads the partition again from {From}, handling again whatever after that offset was handled here")]
    public static partial void StopLeftRecords(ILogger logger, string queue, string partition, long held, string from);

    [LoggerMessage(6035, LogLevel.Warning, "The Kafka client of '{Queue}' did not leave its group and close within CloseTimeout ({Timeout}) of the stop: the stop returns and leaves it closing; should it never close, the group hands its partitions on after the session timeout, and their next owner handles again what was not committed")]
    public static partial void ClientLeftClosing(ILogger logger, string queue, TimeSpan timeout);
}
