using System.Globalization;
using System.Text.RegularExpressions;
using RabbitMQ.Client.Events;

namespace Herald.RabbitMQ.Transport;

/// <summary>
/// Herald's own count of a consumer's deliveries cut off by the broker's <c>consumer_timeout</c> (the channel closed with
/// 406 for a delivery unacked too long). The broker puts such a delivery back and hands it out again, and a handler that
/// always runs that long would be cut off and run again for ever (the count is in no header: a classic queue only flags a
/// redelivery); past <see cref="MaxCutOffs"/> cut-offs the consumer dead-letters it instead of running it again. Tracks the
/// deliveries whose handlers run, so a close can tell which ones it cut off: those running, received at least half the
/// timeout before (the broker counts from the delivery, so time waiting in a lane behind a slow one counts too; half, as
/// the broker's clock started a little earlier, when it sent the delivery), not the ones that merely started beside them
/// or waited in a lane.
/// </summary>
internal sealed partial class ConsumerTimeouts(TimeProvider timeProvider, int concurrency)
{
    /// <summary>Cut-offs after which a delivery of the message is dead-lettered instead of handled.</summary>
    internal const int MaxCutOffs = 2;

    // Messages remembered at most, so a stream of cut-offs cannot grow the memo without bound.
    private const int Capacity = 1024;

    private readonly Lock _lock = new();
    private readonly HashSet<RabbitMqDelivery> _handling = new(concurrency);
    private readonly Dictionary<Guid, int> _cutOffs = [];
    private int _remembered;

    /// <summary>Whether the broker closed the channel for <c>consumer_timeout</c>, and the timeout it used when it says.</summary>
    public static bool IsConsumerTimeout(ShutdownEventArgs reason, out TimeSpan? timeout)
    {
        timeout = null;
        if (reason.ReplyCode != 406 || !reason.ReplyText.Contains("delivery acknowledgement on channel", StringComparison.Ordinal)
            || !reason.ReplyText.Contains("timed out", StringComparison.Ordinal))
        {
            return false;
        }

        if (TimeoutUsed().Match(reason.ReplyText) is { Success: true } used
            && long.TryParse(used.Groups[1].ValueSpan, NumberStyles.None, CultureInfo.InvariantCulture, out var ms))
        {
            timeout = TimeSpan.FromMilliseconds(ms);
        }

        return true;
    }

    /// <summary>A delivery's handler starts.</summary>
    public void Started(RabbitMqDelivery received)
    {
        lock (_lock)
        {
            _handling.Add(received);
        }
    }

    /// <summary>A delivery's handler is done.</summary>
    public void Finished(RabbitMqDelivery received)
    {
        lock (_lock)
        {
            _handling.Remove(received);
        }
    }

    /// <summary>
    /// The channel of <paramref name="generation"/> was closed for <c>consumer_timeout</c>: counts a cut-off for each of
    /// its deliveries whose handler runs, received at least half <paramref name="timeout"/> ago (each running one when
    /// unknown), and returns them with their counts.
    /// </summary>
    public List<(Guid MessageId, int CutOffs)> ChannelTimedOut(int generation, TimeSpan? timeout)
    {
        var now = timeProvider.GetTimestamp();
        var cut = new List<(Guid, int)>();
        lock (_lock)
        {
            foreach (var received in _handling)
            {
                if (received.Generation != generation || received.DecodeFailure is not null
                    || (timeout is { } t && timeProvider.GetElapsedTime(received.ReceivedAt, now) < t / 2))
                {
                    continue;
                }

                var id = received.Envelope.MessageId;
                _cutOffs.TryGetValue(id, out var count);
                count++;
                if (count > 1 || _cutOffs.Count < Capacity)
                {
                    _cutOffs[id] = count;
                }

                cut.Add((id, count));
            }

            Volatile.Write(ref _remembered, _cutOffs.Count);
        }

        return cut;
    }

    /// <summary>How often the message was cut off, when that is <see cref="MaxCutOffs"/> or more; else null.</summary>
    public int? CutOffTooOften(Guid messageId)
    {
        // Read on every redelivery: nothing to look up while no message was ever cut off.
        if (Volatile.Read(ref _remembered) == 0)
        {
            return null;
        }

        lock (_lock)
        {
            return _cutOffs.TryGetValue(messageId, out var count) && count >= MaxCutOffs ? count : null;
        }
    }

    /// <summary>
    /// Forgets the message once a delivery of it was settled on its live channel (dead-lettered): kept until then, since
    /// one dead-lettered but cut off again while it waited for its turn comes back, to be dead-lettered again.
    /// </summary>
    public void Settled(Guid messageId)
    {
        if (Volatile.Read(ref _remembered) == 0)
        {
            return;
        }

        lock (_lock)
        {
            if (_cutOffs.Remove(messageId))
            {
                Volatile.Write(ref _remembered, _cutOffs.Count);
            }
        }
    }

    [GeneratedRegex(@"Timeout value used: (\d+) ms", RegexOptions.CultureInvariant)]
    private static partial Regex TimeoutUsed();
}
