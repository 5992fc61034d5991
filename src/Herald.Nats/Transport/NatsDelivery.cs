using Herald.Messages;
using Herald.Transport;
using NATS.Client.JetStream;

namespace Herald.Nats.Transport;

/// <summary>One JetStream message as a Herald delivery; its consumer carries out the settlements.</summary>
internal sealed class NatsDelivery(NatsConsumer consumer, INatsJSMsg<byte[]> message, Envelope envelope, Exception? decodeFailure, int delivered, ulong streamSequence)
    : Delivery(envelope, consumer.Queue, decodeFailure)
{
    public INatsJSMsg<byte[]> Message { get; } = message;

    /// <summary>
    /// The attempt: the server's count of deliveries of this message (read once: the metadata is parsed on each read), plus
    /// those before a stop put it back in the stream; a delayed send reaches the consumer only when due, so each is an attempt.
    /// </summary>
    public int Delivered { get; } = delivered;

    public ulong StreamSequence { get; } = streamSequence;

    /// <summary>The last delivery <c>MaxDeliver</c> allows: a nak would leave the message undelivered in the stream.</summary>
    public override bool IsLastDelivery => consumer.IsLastDelivery(Delivered);

    /// <summary><see cref="Slot"/> of a delivery the consumer keeps in its overflow set instead of a slot.</summary>
    internal const int InOverflow = -2;

    // Where the consumer keeps it among the unsettled deliveries: its slot, InOverflow, or -1 before it is tracked.
    internal int Slot = -1;

    // Set while its dead-letter copy is stored: settled, yet still the server's to deliver again until the ack after the copy.
    private volatile bool _storingCopy;

    /// <summary>Whether the keep-alive tells the server it is still being worked on: unsettled, or its dead-letter copy is being stored.</summary>
    internal bool IsKeptAlive => !IsSettled || _storingCopy;

    /// <summary>Keeps it alive, though settled, until the consumer forgets it: its dead-letter copy is being stored.</summary>
    internal void StoringCopy() => _storingCopy = true;

    // The keep-alive's last +WPI for it, and whether a nak took it out of the keep-alive; both guarded by this.
    private Task _progress = Task.CompletedTask;
    private bool _released;

    /// <summary>Starts the keep-alive's <c>+WPI</c> for it (<paramref name="send"/>, which never throws) unless it is no longer kept alive.</summary>
    internal void KeepAlive(Func<NatsDelivery, Task> send)
    {
        // Checked and started under the lock Release takes, so a nak never goes out before a +WPI started after it.
        lock (this)
        {
            if (!_released && IsKeptAlive)
            {
                _progress = send(this);
            }
        }
    }

    /// <summary>
    /// Takes it out of the keep-alive before a nak; completes once a <c>+WPI</c> the keep-alive started before is written.
    /// A +WPI the server gets after a nak with a delay starts the ack wait again, so the delay is lost.
    /// </summary>
    internal Task ReleaseAsync()
    {
        lock (this)
        {
            _released = true;
            return _progress;
        }
    }

    protected override ValueTask OnAckAsync(CancellationToken cancellationToken) => consumer.AckAsync(this, cancellationToken);

    protected override ValueTask OnNackAsync(TimeSpan delay, CancellationToken cancellationToken) => consumer.NakAsync(this, delay, cancellationToken);

    protected override ValueTask OnDeadLetterAsync(string reason, CancellationToken cancellationToken) =>
        consumer.DeadLetterAsync(this, reason, headers: null, TimeSpan.Zero, cancellationToken);

    protected override ValueTask OnDeadLetterAsync(string reason, IReadOnlyDictionary<string, string> headers, CancellationToken cancellationToken) =>
        consumer.DeadLetterAsync(this, reason, headers, TimeSpan.Zero, cancellationToken);
}
