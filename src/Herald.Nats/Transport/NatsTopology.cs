using System.Globalization;
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

    // JetStream's "subjects overlap with an existing stream".
    public const int StreamSubjectOverlap = 10065;

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

    /// <summary>
    /// Where a new source of the stream starts: just after its last message, by the server's clock (the time the server
    /// stored it, plus a tick), or at the stream's creation if it never had one. A time rather than a sequence: after a
    /// restart the server restarts a source whose copies are all gone (acked off a work queue) from its configured start
    /// time or the sourcing stream's last time, whichever is later, but from a configured sequence as it is, copying
    /// everything kept since the binding again.
    /// </summary>
    public static DateTimeOffset StartAfterLast(StreamInfo stream) =>
        stream.State.LastSeq > 0 && ParseServerTime(stream.State.LastTs) is { } last ? last.AddTicks(1) : stream.Created;

    /// <summary>A server timestamp (RFC 3339, up to nanoseconds) cut to the 100 ns of a <see cref="DateTimeOffset"/>, so it is never later.</summary>
    internal static DateTimeOffset? ParseServerTime(string? value)
    {
        if (string.IsNullOrEmpty(value))
        {
            return null;
        }

        // .NET reads at most 7 fraction digits; cut (not rounded) so the tick added after it lands past the real time.
        var dot = value.IndexOf('.', StringComparison.Ordinal);
        if (dot >= 0)
        {
            var end = dot + 1;
            while (end < value.Length && char.IsAsciiDigit(value[end]))
            {
                end++;
            }

            if (end - dot - 1 > 7)
            {
                value = string.Concat(value.AsSpan(0, dot + 8), value.AsSpan(end));
            }
        }

        return DateTimeOffset.TryParse(value, CultureInfo.InvariantCulture, DateTimeStyles.AssumeUniversal, out var time) ? time : null;
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

    /// <summary>
    /// The durable consumer of a queue's delay stream: no <c>MaxDeliver</c> (its naks defer early messages, as often as
    /// needed), and an ack wait a quarter of the queue stream's duplicate window (<paramref name="duplicateWindow"/>),
    /// 1 to 30 s, so a move repeated after it is still dropped as a duplicate.
    /// </summary>
    public static ConsumerConfig DelayDurableConfig(TimeSpan duplicateWindow)
    {
        var ackWait = duplicateWindow > TimeSpan.Zero ? duplicateWindow / 4 : TimeSpan.FromSeconds(30);
        return new ConsumerConfig(NatsNames.DelayDurable)
        {
            AckPolicy = ConsumerConfigAckPolicy.Explicit,
            AckWait = TimeSpan.FromTicks(Math.Clamp(ackWait.Ticks, TimeSpan.TicksPerSecond, 30 * TimeSpan.TicksPerSecond)),
            MaxDeliver = -1,
            DeliverPolicy = ConsumerConfigDeliverPolicy.All,
        };
    }
}

/// <summary>
/// Where a queue lives: its stream, the subject sends publish to, the subjects its consumer takes (null: the whole
/// stream), where a new consumer starts, and whether messages of one subject keep their order.
/// </summary>
internal sealed record QueueTarget(string Stream, string Subject, string? FilterSubject, NatsStartPosition StartFrom, bool OrderBySubject);
