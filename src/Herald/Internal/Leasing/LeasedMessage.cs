using Herald.Messages;

namespace Herald.Internal;

/// <summary>
/// A message a leased-queue backend took under its lease: the envelope, or what could be read of it with the reason it could
/// not be decoded. Backends derive from it to keep what settling needs (a row id, a receipt handle).
/// </summary>
/// <remarks>An extension point for Herald's adapter packages, not for application code; it may change in any release.</remarks>
public abstract class LeasedMessage
{
    /// <summary>Creates a claimed message; with <paramref name="decodeFailure"/>, one the pipeline dead-letters unhandled.</summary>
    /// <param name="envelope">The message, with <see cref="Envelope.DeliveryAttempt"/> set; when undecodable, what could be read of it.</param>
    /// <param name="decodeFailure">Why the stored message could not be decoded, or null.</param>
    protected LeasedMessage(Envelope envelope, Exception? decodeFailure = null)
    {
        ArgumentNullException.ThrowIfNull(envelope);
        Envelope = envelope;
        DecodeFailure = decodeFailure;
    }

    /// <summary>The message as delivered.</summary>
    public Envelope Envelope { get; }

    /// <summary>Why the message could not be decoded, or null; such a message goes to the dead letters with this reason.</summary>
    public Exception? DecodeFailure { get; }
}
