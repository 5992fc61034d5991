using System.Collections.Concurrent;
using Confluent.Kafka;
using Confluent.Kafka.Admin;

namespace Herald.Kafka.Transport;

internal sealed partial class KafkaTransport
{
    private readonly ConcurrentDictionary<string, Lazy<Task>> _topics = new(StringComparer.Ordinal);

    /// <summary>
    /// Makes sure the topic exists before it is produced to or subscribed (a subscription to a missing topic would only
    /// notice it at the next metadata refresh). Created through the admin API when <see cref="KafkaTransportOptions.CreateTopics"/>
    /// is on; otherwise a metadata request lets a broker with auto-creation make it. Done once per topic and process.
    /// </summary>
    internal async ValueTask EnsureTopicAsync(string topic, CancellationToken cancellationToken)
    {
        var ensure = _topics.GetOrAdd(topic, name => new Lazy<Task>(() => Task.Run(() => CreateTopicAsync(name))));
        if (ensure.Value.IsCompletedSuccessfully)
        {
            // Every produce passes here: a known topic costs a lookup, nothing more.
            return;
        }

        try
        {
            await ensure.Value.WaitAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (Exception) when (!cancellationToken.IsCancellationRequested)
        {
            // Tried again on the next use rather than remembered as broken.
            _topics.TryRemove(new KeyValuePair<string, Lazy<Task>>(topic, ensure));
            throw;
        }
    }

    /// <summary>Forgets that the topic was made or found, so its next use checks it again.</summary>
    private void ForgetTopic(string topic) => _topics.TryRemove(topic, out _);

    private async Task CreateTopicAsync(string topic)
    {
        if (_options.CreateTopics)
        {
            try
            {
                await _admin!.CreateTopicsAsync(
                    [new TopicSpecification { Name = topic, NumPartitions = _options.TopicPartitions, ReplicationFactor = _options.ReplicationFactor }],
                    new CreateTopicsOptions { RequestTimeout = TimeSpan.FromSeconds(30) }).ConfigureAwait(false);
                Log.TopicCreated(Logger, topic, _options.TopicPartitions);
            }
            catch (CreateTopicsException e) when (e.Results.All(r => r.Error.Code is ErrorCode.TopicAlreadyExists or ErrorCode.NoError))
            {
            }

            return;
        }

        ThrowUnlessTopicExists(topic);
    }

    /// <summary>
    /// The health check's probe (<see cref="DeclareQueueCoreAsync"/>): sends answer from <see cref="EnsureTopicAsync"/>'s
    /// cache, this asks a broker for the topic's metadata each time. A failure forgets the topic, so its next use checks it again.
    /// </summary>
    private async Task ProbeTopicAsync(string topic, CancellationToken cancellationToken)
    {
        try
        {
            await Task.Run(() => ThrowUnlessTopicExists(topic), cancellationToken).WaitAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (Exception) when (!cancellationToken.IsCancellationRequested)
        {
            ForgetTopic(topic);
            throw;
        }
    }

    private void ThrowUnlessTopicExists(string topic)
    {
        var metadata = _admin!.GetMetadata(topic, TimeSpan.FromSeconds(10));
        var found = metadata.Topics.FirstOrDefault(t => t.Topic == topic);
        if (found is null || found.Error.Code != ErrorCode.NoError || found.Partitions.Count == 0)
        {
            var reason = found?.Error.Reason ?? "no metadata";
            throw new HeraldException(_options.CreateTopics
                ? $"Kafka topic '{topic}' is not available ({reason})."
                : $"Kafka topic '{topic}' does not exist and CreateTopics is off ({reason}): create it, enable auto-creation on the brokers, or turn CreateTopics on.");
        }
    }

    /// <summary>
    /// Commits, for a group that has no offsets on <paramref name="topic"/> yet, the topic's current end offsets: the
    /// group then reads only what is published from now on, as a newly bound queue should. Offsets the group already
    /// has (an earlier binding, another process) are left alone, so nothing published since is skipped.
    /// </summary>
    private Task StartGroupAtEndAsync(string groupId, string topic, CancellationToken cancellationToken) => Task.Run(
        () =>
        {
            var metadata = _admin!.GetMetadata(topic, TimeSpan.FromSeconds(10));
            var partitions = metadata.Topics.Single(t => t.Topic == topic).Partitions.Select(p => new TopicPartition(topic, p.PartitionId)).ToList();
            using var consumer = BuildConsumer(groupId).Build();
            var committed = consumer.Committed(partitions, TimeSpan.FromSeconds(10));
            var fresh = committed.Where(c => c.Offset == Offset.Unset).Select(c => c.TopicPartition).ToList();
            if (fresh.Count == 0)
            {
                return;
            }

            var ends = fresh.Select(p => new TopicPartitionOffset(p, consumer.QueryWatermarkOffsets(p, TimeSpan.FromSeconds(10)).High)).ToList();
            try
            {
                consumer.Commit(ends);
            }
            catch (KafkaException e)
            {
                // The group is active (a member is reading): it starts the topic where its reset policy says instead.
                Log.BindingStartNotSet(Logger, groupId, topic, e.Error.Reason);
            }
        },
        cancellationToken);
}
