using System.Collections.Frozen;
using Herald.Messages;

namespace Herald.EventSourcing;

/// <summary>The argument checks every event store runs before an append touches storage, so all stores refuse the same inputs.</summary>
public static class AppendValidation
{
    /// <summary>Default largest event body, in bytes (1 MiB).</summary>
    public const int DefaultMaxEventBytes = 1024 * 1024;

    /// <summary>
    /// Throws an <see cref="ArgumentException"/> (or <see cref="EventTooLargeException"/>) for an invalid stream name, an
    /// invalid expected version, a null or empty-typed event, an empty or repeated event id, a body over the limit, or a text
    /// attribute or header holding half of a surrogate pair.
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

            if (FindHalfOfASurrogatePair(envelope) is { } half)
            {
                throw new ArgumentException(
                    $"The {half.Field} '{StreamName.Printable(half.Value)}' of event {envelope.MessageId} of the append to '{stream}' holds half of a surrogate pair " +
                    "(as when a value is cut inside an emoji), which no engine can store as written; remove it or keep the pair whole.",
                    nameof(events));
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

    // SQLite stored such text as U+FFFD (the event read back altered) and PostgreSQL's client could not encode it, failing every
    // append of its grouped commit; it is refused alike everywhere. Allocates nothing for a valid event (the hot path).
    private static (string Field, string Value)? FindHalfOfASurrogatePair(Envelope envelope)
    {
        if (StreamName.HoldsUnpairedSurrogate(envelope.MessageType))
        {
            return ("message type", envelope.MessageType);
        }

        // An envelope correlated to its own id has no text yet (reading it would make one): a Guid's text is valid anyway.
        if (!envelope.CorrelatesToSelf && StreamName.HoldsUnpairedSurrogate(envelope.CorrelationId))
        {
            return ("correlation id", envelope.CorrelationId!);
        }

        return StreamName.HoldsUnpairedSurrogate(envelope.CausationId) ? ("causation id", envelope.CausationId!)
            : StreamName.HoldsUnpairedSurrogate(envelope.UserId) ? ("user id", envelope.UserId!)
            : StreamName.HoldsUnpairedSurrogate(envelope.PartitionKey) ? ("partition key", envelope.PartitionKey!)
            : StreamName.HoldsUnpairedSurrogate(envelope.ContentType) ? ("content type", envelope.ContentType)
            : envelope.Headers.Count == 0 ? null
            : FindInHeaders(envelope.Headers);
    }

    private static (string Field, string Value)? FindInHeaders(IReadOnlyDictionary<string, string> headers)
    {
        // The concrete types enumerate without boxing an enumerator; another type pays for one.
        switch (headers)
        {
            case Dictionary<string, string> dictionary:
                foreach (var header in dictionary)
                {
                    if (FindInHeader(header) is { } found)
                    {
                        return found;
                    }
                }

                return null;
            case FrozenDictionary<string, string> frozen:
                foreach (var header in frozen)
                {
                    if (FindInHeader(header) is { } found)
                    {
                        return found;
                    }
                }

                return null;
            default:
                foreach (var header in headers)
                {
                    if (FindInHeader(header) is { } found)
                    {
                        return found;
                    }
                }

                return null;
        }
    }

    private static (string Field, string Value)? FindInHeader(KeyValuePair<string, string> header) =>
        StreamName.HoldsUnpairedSurrogate(header.Key) ? ("header name", header.Key)
        : StreamName.HoldsUnpairedSurrogate(header.Value) ? ("header value", header.Value)
        : null;

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
