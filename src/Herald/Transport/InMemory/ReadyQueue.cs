using System.Threading.Channels;
using Herald.Messages;

namespace Herald.Transport.InMemory;

/// <summary>
/// The ready messages of one queue, read by its consumers as a channel: sends and redeliveries go through an unbounded
/// channel, and hand-backs (messages a stopping consumer took but did not settle) go to a small front that readers take
/// first, each at its place by its position (the order the queue took it in), so a stop and a start keep the send order
/// however many consumers hand back, as a broker's requeue puts a message back at its place. Unbounded: the queue's permits
/// bound what it holds.
/// </summary>
/// <remarks>
/// The normal path costs one more volatile read per read and one interlocked increment per add (the position). A
/// hand-back wakes waiting readers by writing an empty wake-up into the channel, which readers skip; it allocates nothing
/// per message a reader waits for.
/// </remarks>
internal sealed class ReadyQueue : ChannelReader<Envelope>
{
    // A wake-up is the default entry (no envelope).
    private readonly Channel<QueuedEnvelope> _channel = Channel.CreateUnbounded<QueuedEnvelope>(new UnboundedChannelOptions { SingleReader = false, SingleWriter = false });

    // The front, sorted by position with its head last, so a take removes the last item.
    private readonly List<QueuedEnvelope> _front = [];
    private readonly Lock _gate = new();
    private volatile int _frontCount;
    private long _added;

    // Wake-ups written into the channel and not yet skipped, left out of Count.
    private int _wakeUps;

    public override bool CanCount => true;

    public override int Count => Math.Max(0, _frontCount + _channel.Reader.Count - Volatile.Read(ref _wakeUps));

    public override bool TryRead(out Envelope item)
    {
        var read = TryReadQueued(out var queued);
        item = queued.Envelope;
        return read;
    }

    /// <summary>Takes the head with its position, which a hand-back of it passes back.</summary>
    public bool TryReadQueued(out QueuedEnvelope item)
    {
        while (true)
        {
            if (_frontCount != 0 && TryTakeFront(out item))
            {
                return true;
            }

            if (!_channel.Reader.TryRead(out item))
            {
                return false;
            }

            if (item.Envelope is not null)
            {
                return true;
            }

            // A wake-up: look at the front again, which it was written for.
            Interlocked.Decrement(ref _wakeUps);
        }
    }

    public override ValueTask<bool> WaitToReadAsync(CancellationToken cancellationToken = default)
    {
        if (_frontCount != 0 && !cancellationToken.IsCancellationRequested)
        {
            return new ValueTask<bool>(true);
        }

        return _channel.Reader.WaitToReadAsync(cancellationToken);
    }

    /// <summary>Adds <paramref name="envelope"/> at the back, with the next position.</summary>
    public void Add(Envelope envelope) => _channel.Writer.TryWrite(new QueuedEnvelope(envelope, Interlocked.Increment(ref _added)));

    /// <summary>
    /// Puts <paramref name="envelopes"/> (read from this queue, in any order) back before everything still in the channel,
    /// each at its place by position among those handed back and not read yet.
    /// </summary>
    public void AddToFront(ReadOnlySpan<QueuedEnvelope> envelopes)
    {
        if (envelopes.IsEmpty)
        {
            return;
        }

        lock (_gate)
        {
            foreach (var envelope in envelopes)
            {
                _front.Insert(PlaceOf(envelope.Position), envelope);
            }

            _frontCount = _front.Count;
        }

        // Counted before it is written, so a reader that skips it never takes the count below zero.
        Interlocked.Increment(ref _wakeUps);
        _channel.Writer.TryWrite(default);
    }

    // Where a position goes in the front (sorted descending): after every greater position.
    private int PlaceOf(long position)
    {
        var (low, high) = (0, _front.Count);
        while (low < high)
        {
            var middle = (low + high) >>> 1;
            if (_front[middle].Position > position)
            {
                low = middle + 1;
            }
            else
            {
                high = middle;
            }
        }

        return low;
    }

    private bool TryTakeFront(out QueuedEnvelope item)
    {
        lock (_gate)
        {
            if (_front.Count == 0)
            {
                item = default;
                return false;
            }

            item = _front[^1];
            _front.RemoveAt(_front.Count - 1);
            _frontCount = _front.Count;
            return true;
        }
    }
}
