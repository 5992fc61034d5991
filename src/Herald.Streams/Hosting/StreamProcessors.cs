namespace Herald.Streams;

/// <summary>The stream processors of this host (registered with <c>AddStream</c>), by name, for queries and status.</summary>
public sealed class StreamProcessors
{
    private readonly Dictionary<string, StreamProcessor> _processors;
    private readonly Dictionary<Type, IReadOnlyList<StreamProcessor>> _transport;

    internal StreamProcessors(IEnumerable<StreamRegistration> registrations, IServiceProvider services)
    {
        var list = registrations.ToList();
        _processors = list.ToDictionary(r => r.Name, r => new StreamProcessor(r.Name, r.Topology, services, r.Options), StringComparer.Ordinal);
        _transport = list.Where(r => r.Options.Source.IsTransport)
            .SelectMany(r => r.Topology.SourceTypes.Select(t => (Type: t, Processor: _processors[r.Name])))
            .GroupBy(p => p.Type)
            .ToDictionary(g => g.Key, g => (IReadOnlyList<StreamProcessor>)[.. g.Select(p => p.Processor)]);
    }

    /// <summary>The names of the registered streams.</summary>
    public IReadOnlyCollection<string> Names => _processors.Keys;

    /// <summary>The processor of the stream <paramref name="name"/>.</summary>
    /// <exception cref="KeyNotFoundException">No stream of that name is registered.</exception>
    public StreamProcessor this[string name] => _processors.TryGetValue(name, out var processor)
        ? processor
        : throw new KeyNotFoundException($"No stream named '{name}' is registered; register it with AddStream.");

    internal IEnumerable<StreamProcessor> All => _processors.Values;

    /// <summary>The processors whose source is the host's endpoint.</summary>
    internal IEnumerable<StreamProcessor> Transport => _transport.Values.SelectMany(p => p).Distinct();

    /// <summary>The processors fed by the endpoint that read <paramref name="messageType"/>, in registration order.</summary>
    internal IReadOnlyList<StreamProcessor> ReadingTransport(Type messageType) => _transport.TryGetValue(messageType, out var list) ? list : [];
}

/// <summary>A stream registered with <c>AddStream</c>.</summary>
internal sealed record StreamRegistration(string Name, StreamTopology Topology, StreamProcessorOptions Options);
