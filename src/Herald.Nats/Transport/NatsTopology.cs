using NATS.Client.JetStream.Models;

namespace Herald.Nats.Transport;

/// <summary>The JetStream configurations Herald creates: streams from <see cref="NatsStreamOptions"/>, durable consumers of queues.</summary>
internal static class NatsTopology
{
    // JetStream's "stream not found" and "consumer not found" error codes.
    public const int StreamNotFound = 10059;
    public const int ConsumerNotFound = 10014;

    // JetStream's "stream name already in use with a different configuration".
    public const int StreamNameInUse = 10058;

    public static StreamConfig StreamConfig(NatsStreamOptions stream)
    {
        var config = new StreamConfig(stream.Name, [.. stream.Subjects])
        {
            Retention = stream.Retention switch
            {
                NatsRetention.Interest => StreamConfigRetention.Interest,
                NatsRetention.WorkQueue => StreamConfigRetention.Workqueue,
                _ => StreamConfigRetention.Limits,
            },
            Storage = stream.Storage == NatsStorage.Memory ? StreamConfigStorage.Memory : StreamConfigStorage.File,
            NumReplicas = stream.Replicas,
        };
        if (stream.MaxMessages is { } messages)
        {
            config.MaxMsgs = messages;
        }

        if (stream.MaxBytes is { } bytes)
        {
            config.MaxBytes = bytes;
        }

        if (stream.MaxAge is { } age)
        {
            config.MaxAge = age;
        }

        if (stream.DuplicateWindow is { } window)
        {
            config.DuplicateWindow = window;
        }

        return config;
    }

    public static ConsumerConfig DurableConfig(string durable, QueueTarget target, NatsTransportOptions options)
    {
        var config = new ConsumerConfig(durable)
        {
            AckPolicy = ConsumerConfigAckPolicy.Explicit,
            AckWait = options.AckWait,
            MaxDeliver = options.MaxDeliver ?? -1,
        };
        if (target.FilterSubject is { } filter)
        {
            config.FilterSubject = filter;
        }

        var start = target.StartFrom;
        switch (start.Kind)
        {
            case NatsStartKind.New:
                config.DeliverPolicy = ConsumerConfigDeliverPolicy.New;
                break;
            case NatsStartKind.FromSequence:
                config.DeliverPolicy = ConsumerConfigDeliverPolicy.ByStartSequence;
                config.OptStartSeq = start.Sequence;
                break;
            case NatsStartKind.FromTime:
                config.DeliverPolicy = ConsumerConfigDeliverPolicy.ByStartTime;
                config.OptStartTime = start.Time;
                break;
            default:
                config.DeliverPolicy = ConsumerConfigDeliverPolicy.All;
                break;
        }

        return config;
    }
}

/// <summary>
/// Where a queue lives: its stream, the subject sends publish to, the subjects its consumer takes (null: the whole
/// stream), where a new consumer starts, and whether messages of one subject keep their order.
/// </summary>
internal sealed record QueueTarget(string Stream, string Subject, string? FilterSubject, NatsStartPosition StartFrom, bool OrderBySubject);
