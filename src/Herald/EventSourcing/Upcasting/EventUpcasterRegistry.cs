using System.Text.Json.Nodes;
using Herald.Messages;

namespace Herald.EventSourcing.Upcasting;

/// <summary>
/// The upcasters, one per (event type, from-version), chained v1 -> v2 -> v3 on read. Register at start-up; reads are
/// lock-free and thread-safe.
/// </summary>
public sealed class EventUpcasterRegistry
{
    private readonly Lock _gate = new();
    private volatile Dictionary<string, Chain> _chains = new(StringComparer.Ordinal);

    /// <summary>True when no upcaster is registered.</summary>
    public bool IsEmpty => _chains.Count == 0;

    /// <summary>Registers an upcaster; throws <see cref="ArgumentException"/> when its (type, from-version) is already taken.</summary>
    public EventUpcasterRegistry Add(IEventUpcaster upcaster)
    {
        ArgumentNullException.ThrowIfNull(upcaster);
        ArgumentException.ThrowIfNullOrWhiteSpace(upcaster.EventType, nameof(upcaster));
        ArgumentOutOfRangeException.ThrowIfLessThan(upcaster.FromVersion, 1, nameof(upcaster));
        lock (_gate)
        {
            var chains = new Dictionary<string, Chain>(_chains, StringComparer.Ordinal);
            var steps = chains.TryGetValue(upcaster.EventType, out var chain) ? new Dictionary<int, IEventUpcaster>(chain.Steps) : [];
            if (!steps.TryAdd(upcaster.FromVersion, upcaster))
            {
                throw new ArgumentException(
                    $"An upcaster of '{upcaster.EventType}' from v{upcaster.FromVersion} is already registered ({steps[upcaster.FromVersion].GetType().Name}); each step of a chain has one upcaster.",
                    nameof(upcaster));
            }

            chains[upcaster.EventType] = new Chain(steps, steps.Keys.Max());
            _chains = chains;
        }

        return this;
    }

    /// <summary>Registers a JSON body migration of <paramref name="eventType"/> from <paramref name="fromVersion"/> to the next version.</summary>
    public EventUpcasterRegistry Add(string eventType, int fromVersion, Func<JsonNode, JsonNode> upcast)
    {
        ArgumentNullException.ThrowIfNull(upcast);
        return Add(new DelegateJsonEventUpcaster(eventType, fromVersion, upcast));
    }

    /// <summary>
    /// Migrates the envelope through every step from its schema version to the newest one registered. Throws
    /// <see cref="EventUpcastingException"/> when a step fails or is missing (a gap in the chain).
    /// </summary>
    public Envelope Upcast(Envelope envelope)
    {
        ArgumentNullException.ThrowIfNull(envelope);
        if (!_chains.TryGetValue(envelope.MessageType, out var chain) || envelope.SchemaVersion > chain.MaxFromVersion)
        {
            return envelope;
        }

        var current = envelope;
        var version = envelope.SchemaVersion;
        JsonNode? pending = null; // a parsed body carried between JSON steps
        try
        {
            while (chain.Steps.TryGetValue(version, out var step))
            {
                if (step is JsonEventUpcaster json)
                {
                    pending ??= JsonBody.Parse(current);
                    pending = json.UpcastBody(pending, current);
                }
                else
                {
                    if (pending is not null)
                    {
                        current = current with { Body = JsonBody.Serialize(pending) };
                        pending = null;
                    }

                    current = step.Upcast(current) ?? throw new InvalidOperationException($"The upcaster {step.GetType().Name} returned null.");
                    if (!string.Equals(current.MessageType, envelope.MessageType, StringComparison.Ordinal))
                    {
                        throw new InvalidOperationException($"The upcaster {step.GetType().Name} changed the event type to '{current.MessageType}'; upcasters keep the type.");
                    }
                }

                version++;
                current = current with { SchemaVersion = version };
            }

            if (pending is not null)
            {
                current = current with { Body = JsonBody.Serialize(pending) };
            }
        }
        catch (Exception ex) when (ex is not EventUpcastingException and not OperationCanceledException)
        {
            throw new EventUpcastingException(envelope.MessageType, version,
                $"The '{envelope.MessageType}' event {envelope.MessageId} could not be upcast from v{version}: {ex.Message}", ex);
        }

        if (version <= chain.MaxFromVersion)
        {
            throw new EventUpcastingException(envelope.MessageType, version,
                $"The '{envelope.MessageType}' event {envelope.MessageId} is at v{version}, but no upcaster migrates '{envelope.MessageType}' from v{version} " +
                $"while one exists from v{chain.MaxFromVersion}: the chain has a gap. Register an upcaster from v{version}.");
        }

        return current;
    }

    /// <summary>
    /// Migrates a recorded event's envelope (see <see cref="Upcast(Envelope)"/>); returns the same instance when nothing applies.
    /// The <see cref="EventUpcastingException"/> names the stream and version of the event.
    /// </summary>
    public RecordedEvent Upcast(RecordedEvent recorded)
    {
        ArgumentNullException.ThrowIfNull(recorded);
        Envelope upcast;
        try
        {
            upcast = Upcast(recorded.Envelope);
        }
        catch (EventUpcastingException ex)
        {
            throw new EventUpcastingException(ex.EventType, ex.SchemaVersion,
                $"Stream '{recorded.Stream}' version {recorded.Version} (position {recorded.Position}): {ex.Message}", ex.InnerException);
        }

        return ReferenceEquals(upcast, recorded.Envelope) ? recorded : recorded with { Envelope = upcast };
    }

    private sealed record Chain(Dictionary<int, IEventUpcaster> Steps, int MaxFromVersion);
}
