using System.Text.Json.Nodes;
using Herald.Messages;

namespace Herald.EventSourcing.Upcasting;

/// <summary>
/// The upcasters, one per (event type, from-version), chained v1 -> v2 -> v3 on read, and the renames of event types
/// (a former name read as the current one). Register at start-up; reads are lock-free and thread-safe.
/// </summary>
public sealed class EventUpcasterRegistry
{
    private readonly Lock _gate = new();
    private volatile Dictionary<string, Chain> _chains = new(StringComparer.Ordinal);
    private volatile Renames _renames = Renames.None;

    /// <summary>True when no upcaster and no rename is registered.</summary>
    public bool IsEmpty => _chains.Count == 0 && _renames.Current.Count == 0;

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

            chains[upcaster.EventType] = new Chain(steps, steps.Keys.Min(), steps.Keys.Max());
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
    /// Reads events stored as <paramref name="formerType"/> (after its own upcasters, if any) as <paramref name="currentType"/>
    /// at the same schema version, then runs <paramref name="currentType"/>'s upcasters. Throws <see cref="ArgumentException"/>
    /// when the former name is renamed already or the rename would close a cycle.
    /// </summary>
    public EventUpcasterRegistry AddRename(string formerType, string currentType)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(formerType);
        ArgumentException.ThrowIfNullOrWhiteSpace(currentType);
        if (string.Equals(formerType, currentType, StringComparison.Ordinal))
        {
            throw new ArgumentException($"The event type '{formerType}' cannot be renamed to itself.", nameof(currentType));
        }

        lock (_gate)
        {
            var next = new Dictionary<string, string>(_renames.Next, StringComparer.Ordinal);
            if (!next.TryAdd(formerType, currentType))
            {
                throw new ArgumentException(
                    $"The event type '{formerType}' is already renamed to '{next[formerType]}'; it cannot also be read as '{currentType}'.", nameof(formerType));
            }

            for (var name = currentType; next.TryGetValue(name, out var after); name = after)
            {
                if (string.Equals(after, formerType, StringComparison.Ordinal))
                {
                    throw new ArgumentException(
                        $"Renaming '{formerType}' to '{currentType}' would close a cycle of renames back to '{formerType}'.", nameof(currentType));
                }
            }

            _renames = Renames.Create(next);
        }

        return this;
    }

    /// <summary>The name an event stored as <paramref name="eventType"/> is read as: its current name after every rename.</summary>
    internal string CurrentName(string eventType) =>
        _renames.Current.Count != 0 && _renames.Current.TryGetValue(eventType, out var current) ? current : eventType;

    /// <summary>
    /// Throws <see cref="MessageTypeRegistrationException"/> when a former name is the registered name of a message type (the
    /// events written under it today would be read as another type), or when a chain of upcasters has a gap or does not end
    /// at the registered version of the type its events are read as (they would be read as a shape they do not have).
    /// </summary>
    internal void ValidateAgainst(MessageTypeRegistry messageTypes)
    {
        var renames = _renames;
        foreach (var (former, next) in renames.Next)
        {
            if (messageTypes.TryGetByName(former, out var registered))
            {
                throw new MessageTypeRegistrationException(
                    $"The event type '{former}' is renamed to '{next}' (EventUpcasterRegistry.AddRename), but '{former}' is the registered name of " +
                    $"'{registered.ClrType.FullName}': its events would be read as '{next}'. Give that type another name, or remove the rename.");
            }
        }

        var chains = _chains;
        foreach (var (type, chain) in chains)
        {
            // Every version from the chain's first step on migrates to the version after its last step; from there the
            // renames and the chains of the later names take it on. A chain whose type no registered type is read as is used
            // through store.WithUpcasting alone: only its gaps are known.
            var (name, version) = (type, chain.FirstFromVersion);
            while (true)
            {
                if (chains.TryGetValue(name, out var step) && version <= step.MaxFromVersion)
                {
                    for (; version <= step.MaxFromVersion; version++)
                    {
                        if (!step.Steps.ContainsKey(version))
                        {
                            throw new MessageTypeRegistrationException(
                                $"The events of '{type}' reach '{name}' at v{version}, but no upcaster migrates '{name}' from v{version} while one exists " +
                                $"from v{step.MaxFromVersion}: the chain has a gap, and every read of them would fail. Register an upcaster of '{name}' from v{version}.");
                        }
                    }
                }

                if (!renames.Next.TryGetValue(name, out var renamed))
                {
                    break;
                }

                name = renamed;
            }

            if (messageTypes.TryGetByName(name, out var target) && version != target.Version)
            {
                var via = string.Equals(name, type, StringComparison.Ordinal) ? string.Empty : $" (read as '{name}')";
                throw new MessageTypeRegistrationException(version < target.Version
                    ? $"The upcasters of '{type}'{via} migrate its events to v{version}, but '{name}' is registered at v{target.Version} ({target.ClrType.FullName}): " +
                      $"they would be read as v{target.Version}. Register an upcaster of '{name}' from v{version}."
                    : $"The upcasters of '{type}'{via} migrate its events to v{version}, but '{name}' is registered at v{target.Version} ({target.ClrType.FullName}): " +
                      $"the events written at v{target.Version} today would be migrated past it. Register the type at v{version}, or remove the upcasters from v{target.Version} on.");
            }
        }
    }

    /// <summary>
    /// The filter a store is read with so it selects each type it names under every name: the current one and the former
    /// ones. Returns the same instance when no rename concerns it.
    /// </summary>
    internal EventFilter? Widen(EventFilter? filter)
    {
        var renames = _renames;
        if (filter?.EventTypes is not { Count: > 0 } types || renames.Current.Count == 0)
        {
            return filter;
        }

        HashSet<string>? widened = null;
        foreach (var type in types)
        {
            var current = renames.Current.TryGetValue(type, out var renamed) ? renamed : type;
            if (renames.Names.TryGetValue(current, out var names))
            {
                widened ??= new HashSet<string>(types, StringComparer.Ordinal);
                widened.UnionWith(names);
            }
        }

        return widened is null ? filter : filter with { EventTypes = [.. widened] };
    }

    /// <summary>
    /// Migrates the envelope through every step from its schema version to the newest one registered. Throws
    /// <see cref="EventUpcastingException"/> when a step fails or is missing (a gap in the chain).
    /// </summary>
    public Envelope Upcast(Envelope envelope)
    {
        ArgumentNullException.ThrowIfNull(envelope);
        var current = envelope;
        var chains = _chains;
        var renames = _renames;
        while (true)
        {
            if (chains.TryGetValue(current.MessageType, out var chain) && current.SchemaVersion <= chain.MaxFromVersion)
            {
                current = RunChain(current, chain);
            }

            if (renames.Current.Count == 0 || !renames.Next.TryGetValue(current.MessageType, out var renamed))
            {
                return current;
            }

            current = current with { MessageType = renamed };
        }
    }

    // Runs the chain of the envelope's type from its schema version.
    private static Envelope RunChain(Envelope envelope, Chain chain)
    {
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

    private sealed record Chain(Dictionary<int, IEventUpcaster> Steps, int FirstFromVersion, int MaxFromVersion);

    // Next: former name -> the name it was renamed to; Current: former name -> its name after every rename; Names: current
    // name -> itself and every former name of it.
    private sealed record Renames(Dictionary<string, string> Next, Dictionary<string, string> Current, Dictionary<string, string[]> Names)
    {
        public static readonly Renames None = new(new(StringComparer.Ordinal), new(StringComparer.Ordinal), new(StringComparer.Ordinal));

        public static Renames Create(Dictionary<string, string> next)
        {
            var current = new Dictionary<string, string>(StringComparer.Ordinal);
            foreach (var former in next.Keys)
            {
                var name = former;
                while (next.TryGetValue(name, out var after))
                {
                    name = after;
                }

                current[former] = name;
            }

            var names = current.GroupBy(pair => pair.Value, StringComparer.Ordinal)
                .ToDictionary(group => group.Key, group => (string[])[group.Key, .. group.Select(pair => pair.Key)], StringComparer.Ordinal);
            return new Renames(next, current, names);
        }
    }
}
