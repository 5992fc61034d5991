namespace Herald.Streams;

/// <summary>The stream processors of this host (registered with <c>AddStream</c>), by name, for queries and status.</summary>
public sealed class StreamProcessors
{
    private readonly Dictionary<string, StreamProcessor> _processors;

    internal StreamProcessors(IEnumerable<StreamRegistration> registrations, IServiceProvider services)
    {
        _processors = registrations.ToDictionary(r => r.Name, r => new StreamProcessor(r.Name, r.Topology, services, r.Options), StringComparer.Ordinal);
    }

    /// <summary>The names of the registered streams.</summary>
    public IReadOnlyCollection<string> Names => _processors.Keys;

    /// <summary>The processor of the stream <paramref name="name"/>.</summary>
    /// <exception cref="KeyNotFoundException">No stream of that name is registered.</exception>
    public StreamProcessor this[string name] => _processors.TryGetValue(name, out var processor)
        ? processor
        : throw new KeyNotFoundException($"No stream named '{name}' is registered; register it with AddStream.");

    internal IEnumerable<StreamProcessor> All => _processors.Values;
}

/// <summary>A stream registered with <c>AddStream</c>.</summary>
internal sealed record StreamRegistration(string Name, StreamTopology Topology, StreamProcessorOptions Options);
