using Microsoft.Extensions.Logging;
using NATS.Client.Core;
using NATS.Client.JetStream;

namespace Herald.Nats.Transport;

/// <summary>
/// Keeps a queue's delayed messages off the queue's consumer until they are due, so that consumer's delivery count
/// counts handler attempts only (NATS 2.9 has no per-message delivery time). A delayed send is stored in the queue's
/// delay stream (<c>{prefix}_DELAYED_{queue}</c>, a work queue); every process consuming the queue also pulls from its
/// durable consumer there (<see cref="NatsNames.DelayDurable"/>, no <c>MaxDeliver</c>), naks a message that is early
/// with the rest of its delay, and moves a due one to the queue's subject, then acks it. The move publishes with a
/// <c>Nats-Msg-Id</c> (<see cref="MoveId"/>), so a move done twice (its ack lost, or its process killed in between) is
/// stored once: the durable's ack wait is kept well inside the queue stream's duplicate window. A mapped queue's message
/// a stop put back in its delay stream (<see cref="NatsEnvelopeCodec.PutBackSubjectHeader"/>) is not moved: the mover
/// hands it to the queue's consumer, which handles and settles it there.
/// </summary>
internal sealed class NatsDelayMover
{
    // A delayed message may come back a little before its due time by the clocks of two machines: not worth another nak.
    internal static readonly TimeSpan DueTolerance = TimeSpan.FromMilliseconds(5);

    private const string MessageIdHeader = "Nats-Msg-Id";

    private readonly NatsTransport _transport;
    private readonly NatsDelayLine _line;
    private readonly string _stream;
    private readonly string _queue;
    private readonly string _subject;
    private readonly ILogger _logger;

    // The queue consumer's receive, for a mapped queue's message a stop put back here (null: a mapped topic's delay line).
    private readonly Func<INatsJSMsg<byte[]>, CancellationToken, ValueTask>? _receivePutBack;
    private readonly CancellationTokenSource _stopping = new();
    private Task _pulling = Task.CompletedTask;
    private int _stopped;
    private volatile Exception? _fault;

    private NatsDelayMover(NatsTransport transport, NatsDelayLine line, ILogger logger, Func<INatsJSMsg<byte[]>, CancellationToken, ValueTask>? receivePutBack)
    {
        _receivePutBack = receivePutBack;
        _transport = transport;
        _line = line;
        _stream = line.Stream;
        _queue = line.Name;
        _subject = line.Subject;
        _logger = logger;
    }

    /// <summary>
    /// Starts moving <paramref name="line"/>'s due messages; a message a stop put back there (a mapped queue's) goes to
    /// <paramref name="receivePutBack"/>, the queue consumer's receive, instead, and is settled by it.
    /// </summary>
    public static NatsDelayMover Start(NatsTransport transport, NatsDelayLine line, ILogger logger, Func<INatsJSMsg<byte[]>, CancellationToken, ValueTask>? receivePutBack = null)
    {
        var mover = new NatsDelayMover(transport, line, logger, receivePutBack);
        mover._pulling = Task.Run(mover.PullAsync, CancellationToken.None);
        return mover;
    }

    /// <summary>The pull: ends when stopped, or when the server refused to make its gone durable again (<see cref="Fault"/>).</summary>
    public Task Pulling => _pulling;

    /// <summary>Why the pull ended without a stop, once it has.</summary>
    public Exception? Fault => _fault;

    /// <summary>Stops the pull (what it received and did not move goes back at once); may be called again.</summary>
    public async Task StopAsync()
    {
        if (Interlocked.Exchange(ref _stopped, 1) == 0)
        {
            await _stopping.CancelAsync().ConfigureAwait(false);
        }

        await _pulling.ConfigureAwait(false);
    }

    /// <summary>
    /// The headers of a delayed message as it goes to the queue: without the server's own <c>Nats-</c> headers, and without
    /// its due time (it is due) unless <paramref name="keepDueTime"/>.
    /// </summary>
    internal static NatsHeaders ForQueue(NatsHeaders? headers, bool keepDueTime = false)
    {
        var copy = new NatsHeaders();
        if (headers is not null)
        {
            foreach (var (name, value) in headers)
            {
                if (!name.StartsWith("Nats-", StringComparison.OrdinalIgnoreCase)
                    && (keepDueTime || !name.Equals(NatsEnvelopeCodec.NotBeforeHeader, StringComparison.OrdinalIgnoreCase)))
                {
                    copy[name] = value;
                }
            }
        }

        return copy;
    }

    /// <summary>
    /// The <c>Nats-Msg-Id</c> of a move: the one the message was sent with (its message id, so the queue's duplicate window
    /// treats it as a send of that message), else the delay stream and sequence (a re-send on purpose carries none).
    /// </summary>
    private string MoveId(INatsJSMsg<byte[]> message)
    {
        if (message.Headers is { } headers && headers.TryGetValue(MessageIdHeader, out var sent) && sent.Count > 0 && !string.IsNullOrEmpty(sent[^1]))
        {
            return sent[^1]!;
        }

        var sequence = message.Metadata?.Sequence.Stream ?? 0;
        return _stream + ":" + sequence.ToString(System.Globalization.CultureInfo.InvariantCulture);
    }

    private async Task PullAsync()
    {
        if (await NatsPull.RunAsync(_line.Durable, 100, MoveAsync, e => Log.DelayPullFailed(_logger, e, _queue), RemakeAsync, _transport.TimeProvider, _stopping.Token).ConfigureAwait(false) is { } refused)
        {
            _fault = NatsPull.Ended(_logger, refused, _line.Durable.Info.Name, _stream, _queue);
        }
    }

    private async Task<INatsJSConsumer> RemakeAsync(CancellationToken stop)
    {
        var durable = await _transport.RemakeDelayLineAsync(_line, stop).ConfigureAwait(false);
        Log.ConsumerRemade(_logger, durable.Info.Name, _stream, _queue);
        return durable;
    }

    private async ValueTask MoveAsync(INatsJSMsg<byte[]> message, CancellationToken stop)
    {
        try
        {
            if (stop.IsCancellationRequested)
            {
                // Handed back at once: the next process's mover takes it.
                await message.NakAsync(cancellationToken: CancellationToken.None).ConfigureAwait(false);
                return;
            }

            // A mapped queue's message a stop put back: handled from here (the receive settles it, and hands it back at a stop).
            if (_receivePutBack is not null && NatsEnvelopeCodec.PutBackSubject(message.Headers) is not null)
            {
                await _receivePutBack(message, stop).ConfigureAwait(false);
                return;
            }

            // Early: back until due. A nak costs nothing here (no MaxDeliver), unlike one on the queue's consumer. A due time
            // further ahead than any Herald writes is not waited for: moved now with it, the queue's consumer dead-letters it.
            var beyondReach = false;
            if (NatsEnvelopeCodec.NotBefore(message.Headers) is { } due && due - _transport.TimeProvider.GetUtcNow() is var early && early > DueTolerance)
            {
                beyondReach = early > NatsEnvelopeCodec.FurthestDue;
                if (!beyondReach)
                {
                    await message.NakAsync(new AckOpts { NakDelay = early }, CancellationToken.None).ConfigureAwait(false);
                    return;
                }
            }

            await _transport.PublishRawAsync(_subject, message.Data ?? [], ForQueue(message.Headers, keepDueTime: beyondReach), MoveId(message), CancellationToken.None).ConfigureAwait(false);

            // Double ack: the move is not repeated unless this process dies first (and then the duplicate window drops it).
            await message.AckAsync(new AckOpts { DoubleAck = true }, CancellationToken.None).ConfigureAwait(false);
        }
#pragma warning disable CA1031 // Logged; the message stays in the delay stream and is tried again shortly.
        catch (Exception e)
#pragma warning restore CA1031
        {
            Log.DelayMoveFailed(_logger, e, _queue);
            try
            {
                await message.NakAsync(new AckOpts { NakDelay = TimeSpan.FromSeconds(1) }, CancellationToken.None).ConfigureAwait(false);
            }
#pragma warning disable CA1031 // It comes back after the ack wait.
            catch (Exception)
#pragma warning restore CA1031
            {
            }
        }
    }
}

/// <summary>
/// A delay stream's durable consumer (<paramref name="Durable"/> of <paramref name="Stream"/>, which takes
/// <paramref name="DelaySubject"/>), the subject its due messages are moved to (of <paramref name="TargetStream"/>), and
/// the queue or mapped topic it delays (<paramref name="Name"/>, for logs).
/// </summary>
internal sealed record NatsDelayLine(INatsJSConsumer Durable, string Stream, string DelaySubject, string Subject, string TargetStream, string Name);
