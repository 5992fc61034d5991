using Herald.Messages;
using Herald.Transport;

namespace Herald.Internal;

/// <summary>The argument checks transports make alike before a send.</summary>
/// <remarks>An extension point for Herald's adapter packages, not for application code; it may change in any release.</remarks>
public static class TransportArguments
{
    /// <summary>Throws a <see cref="MessageTooLargeException"/> when the envelope's body is larger than <paramref name="maxMessageBytes"/>.</summary>
    public static void ThrowIfTooLarge(Envelope envelope, int maxMessageBytes)
    {
        ArgumentNullException.ThrowIfNull(envelope);
        if (envelope.Body.Length > maxMessageBytes)
        {
            throw new MessageTooLargeException(envelope.MessageType, envelope.Body.Length, maxMessageBytes);
        }
    }

    /// <summary>
    /// Throws an <see cref="ArgumentOutOfRangeException"/> when the send asks for a delay longer than <paramref name="maxDelay"/>
    /// (the transport's <see cref="TransportCapabilities.MaxDelay"/>), so no transport stores a message it cannot deliver on time.
    /// </summary>
    public static void ThrowIfDelayTooLong(SendOptions? options, TimeSpan maxDelay)
    {
        if (options?.Delay is { } delay && delay > maxDelay)
        {
            throw new ArgumentOutOfRangeException(
                nameof(options), delay, $"A delay of {delay} is longer than the transport's limit of {maxDelay} (its Capabilities.MaxDelay); the message was not sent.");
        }
    }

    /// <summary>Throws an <see cref="ArgumentException"/> for <paramref name="parameter"/> when a queue or topic name is empty or white space.</summary>
    public static void ThrowIfEmptyName(string name, string parameter)
    {
        if (string.IsNullOrWhiteSpace(name))
        {
            throw new ArgumentException("A queue or topic name must not be empty.", parameter);
        }
    }

    /// <summary>Throws an <see cref="ArgumentException"/> for <paramref name="options"/> listing its problems when there are any.</summary>
    public static void ThrowIfInvalid(IReadOnlyList<string> problems, string what, string options = "options")
    {
        ArgumentNullException.ThrowIfNull(problems);
        if (problems.Count > 0)
        {
            throw new ArgumentException($"Invalid {what} options: " + string.Join(" ", problems), options);
        }
    }
}
