using System.Text;
using Herald.Messages;

namespace Herald.Transport;

/// <summary>
/// What a send can be checked against before it leaves (the transport's limits), and which failures are permanent: one
/// place for the outbox at add time, the relay and the stored-event publisher.
/// </summary>
internal static class SendChecks
{
    /// <summary>Throws when the transport will refuse this send whatever happens: too large, name too long, delay too long.</summary>
    public static void Validate(TransportCapabilities capabilities, string destination, Envelope envelope, TimeSpan? delay)
    {
        if (envelope.Body.Length > capabilities.MaxMessageBytes)
        {
            throw new MessageTooLargeException(envelope.MessageType, envelope.Body.Length, capabilities.MaxMessageBytes);
        }

        if (capabilities.MaxNameBytes < int.MaxValue && Encoding.UTF8.GetByteCount(destination) > capabilities.MaxNameBytes)
        {
            throw new MessageRejectedException(
                $"The destination '{Shorten(destination)}' of a '{envelope.MessageType}' message is longer than the transport's limit of {capabilities.MaxNameBytes} bytes; it was not sent.");
        }

        if (delay is { } d && d > capabilities.MaxDelay)
        {
            throw new MessageRejectedException(
                $"A '{envelope.MessageType}' message for '{Shorten(destination)}' asks for a delay of {d}, longer than the transport's limit of {capabilities.MaxDelay}; it was not sent.");
        }
    }

    /// <summary>
    /// Whether <paramref name="exception"/>, thrown by a send, would be thrown again on every retry: Herald's own refusals,
    /// an argument the transport rejects, or what the transport itself classifies as permanent.
    /// </summary>
    public static bool IsPermanent(Exception exception, TransportCapabilities capabilities) =>
        exception is MessageTooLargeException or MessageRejectedException or ArgumentException
        || capabilities.IsPermanentSendFailure?.Invoke(exception) == true;

    private static string Shorten(string name) => name.Length <= 64 ? name : name[..64] + "...";
}
