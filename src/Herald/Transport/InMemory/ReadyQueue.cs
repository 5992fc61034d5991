using System.Threading.Channels;
using Herald.Messages;

namespace Herald.Transport.InMemory;

/// <summary>
/// The ready messages of one queue, read by its consumers as a channel: sends and redeliveries go through an unbounded
/// channel, and hand-backs (messages a stopping consumer took but did not settle) go to a small front that readers take
/// first, so a stop and a start keep the send order, as a broker's requeue puts a message back at its place. Unbounded:
/// the queue's permits bound what it holds.
/// </summary>
/// <remarks>
/// The normal path costs one more volatile read per read. A hand-back wakes waiting readers by writing a null wake-up
/// into the channel, which readers skip; it allocates nothing per message a reader waits for.
/// </remarks>
internal sealed class ReadyQueue : ChannelReader<Envelope>
{
    private readonly Channel<Envelope?> _channel = Channel.CreateUnbounded<Envelope?>(new UnboundedChannelOptions { SingleReader = false, SingleWriter = false });

    // The front, its head last (a stack), so a hand-back puts its messages before those handed back earlier.
    private readonly List<Envelope> _front = [];
    private readonly Lock _gate = new();
    private volatile int _frontCount;

    // Wake-ups written into the channel and not yet skipped, left out of Count.
    private int _wakeUps;

    public override bool CanCount => true;

    public override int Count => Math.Max(0, _frontCount + _channel.Reader.Count - Volatile.Read(ref _wakeUps));

    public override bool TryRead(out Envelope item)
    {
        while (true)
        {
            if (_frontCount != 0 && TryTakeFront(out item))
            {
                return true;
            }

            if (!_channel.Reader.TryRead(out var read))
            {
                item = null!;
                return false;
            }

            if (read is not null)
            {
                item = read;
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

    /// <summary>Adds <paramref name="envelope"/> at the back.</summary>
    public void Add(Envelope envelope) => _channel.Writer.TryWrite(envelope);

    /// <summary>Puts <paramref name="envelopes"/> back at the front, the first of them first, before those put back earlier.</summary>
    public void AddToFront(ReadOnlySpan<Envelope> envelopes)
    {
        if (envelopes.IsEmpty)
        {
            return;
        }

        lock (_gate)
        {
            for (var i = envelopes.Length - 1; i >= 0; i--)
            {
                _front.Add(envelopes[i]);
            }

            _frontCount = _front.Count;
        }

        // Counted before it is written, so a reader that skips it never takes the count below zero.
        Interlocked.Increment(ref _wakeUps);
        _channel.Writer.TryWrite(null);
    }

    private bool TryTakeFront(out Envelope item)
    {
        lock (_gate)
        {
            if (_front.Count == 0)
            {
                item = null!;
                return false;
            }

            item = _front[^1];
            _front.RemoveAt(_front.Count - 1);
            _frontCount = _front.Count;
            return true;
        }
    }
}
