using Herald.Messages;

namespace Herald.EventSourcing;

/// <summary>The argument checks every event store runs before an append touches storage, so all stores refuse the same inputs.</summary>
public static class AppendValidation
{
    /// <summary>Default largest event body, in bytes (1 MiB).</summary>
    public const int DefaultMaxEventBytes = 1024 * 1024;

    /// <summary>
    /// Throws an <see cref="ArgumentException"/> (or <see cref="EventTooLargeException"/>) for an invalid stream name, an
    /// invalid expected version, a null or empty-typed event, an empty or repeated event id, or a body over the limit.
    /// </summary>
    public static void Validate(string stream, ExpectedVersion expectedVersion, IReadOnlyList<Envelope> events, int maxEventBytes = DefaultMaxEventBytes)
    {
        StreamName.Validate(stream);
        ValidateExpectedVersion(expectedVersion);
        ArgumentNullException.ThrowIfNull(events);
        if (events.Count == 0)
        {
            return;
        }

        var ids = new HashSet<Guid>();
        for (var i = 0; i < events.Count; i++)
        {
            var envelope = events[i] ?? throw new ArgumentException($"Event {i} of the append to '{stream}' is null.", nameof(events));
            if (envelope.MessageId == Guid.Empty)
            {
                throw new ArgumentException($"Event {i} of the append to '{stream}' has an empty id; use Guid.CreateVersion7().", nameof(events));
            }

            if (string.IsNullOrWhiteSpace(envelope.MessageType))
            {
                throw new ArgumentException($"Event {envelope.MessageId} of the append to '{stream}' has no message type.", nameof(events));
            }

            if (!ids.Add(envelope.MessageId))
            {
                throw new ArgumentException($"The event id {envelope.MessageId} appears twice in one append to '{stream}'.", nameof(events));
            }

            if (envelope.Body.Length > maxEventBytes)
            {
                throw new EventTooLargeException(envelope.MessageId, envelope.MessageType, envelope.Body.Length, maxEventBytes);
            }
        }
    }

    /// <summary>Throws <see cref="ArgumentException"/> for <c>default(ExpectedVersion)</c>, which is none of the modes.</summary>
    public static void ValidateExpectedVersion(ExpectedVersion expectedVersion)
    {
        if (!(expectedVersion.IsAny || expectedVersion.IsNoStream || expectedVersion.IsStreamExists || expectedVersion.IsExact))
        {
            throw new ArgumentException(
                $"The expected version {expectedVersion.Value} is not valid; use ExpectedVersion.Any, NoStream, StreamExists or Exactly(n).",
                nameof(expectedVersion));
        }
    }
}
