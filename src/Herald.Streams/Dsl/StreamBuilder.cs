using Herald.Streams.Topology;

namespace Herald.Streams;

/// <summary>
/// Builds a stream topology: sources by event type, operators, windows, joins and sinks. <see cref="Build"/> checks the
/// whole graph (cycles, joins without a window, bad window sizes, duplicate store names) and returns an immutable
/// <see cref="StreamTopology"/>; the builder takes no more operators after that.
/// </summary>
public sealed class StreamBuilder
{
    private readonly List<Node> _nodes = [];
    private readonly Dictionary<Type, List<Node>> _sources = [];
    private readonly Dictionary<string, List<Node>> _namedReaders = new(StringComparer.Ordinal);
    private readonly List<NamedSinkNode> _namedWriters = [];
    private readonly List<string> _problems = [];
    private StreamTopology? _built;

    /// <summary>
    /// The events of type <typeparamref name="TValue"/> from the processor's source, keyed by their stream (event store)
    /// or partition key (transport). Event time is the envelope's time unless <paramref name="eventTime"/> picks it.
    /// </summary>
    public IStream<string, TValue> Stream<TValue>(Func<TValue, DateTimeOffset>? eventTime = null)
    {
        var source = new SourceNode<TValue>(NextName("source"), eventTime);
        Add(source);
        if (!_sources.TryGetValue(typeof(TValue), out var list))
        {
            _sources[typeof(TValue)] = list = [];
        }

        list.Add(source);
        return new StreamImpl<string, TValue>(this, source);
    }

    /// <summary>The records written to the named in-topology stream with <see cref="IStream{TKey, TValue}.To(string)"/>.</summary>
    public IStream<TKey, TValue> Stream<TKey, TValue>(string name)
        where TKey : notnull
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(name);
        var reader = new PassNode(NextName("from:" + name));
        Add(reader);
        if (!_namedReaders.TryGetValue(name, out var list))
        {
            _namedReaders[name] = list = [];
        }

        list.Add(reader);
        return new StreamImpl<TKey, TValue>(this, reader);
    }

    /// <summary>Checks the graph and returns the immutable topology; throws <see cref="StreamTopologyException"/> with every problem found.</summary>
    public StreamTopology Build()
    {
        if (_built is not null)
        {
            return _built;
        }

        foreach (var writer in _namedWriters)
        {
            if (_namedReaders.TryGetValue(writer.Stream, out var readers))
            {
                foreach (var reader in readers)
                {
                    writer.AddChild(reader);
                }
            }
            else
            {
                _problems.Add($"'{writer.Name}' writes to the stream '{writer.Stream}', which nothing reads.");
            }
        }

        var problems = new List<string>(_problems);
        foreach (var node in _nodes)
        {
            if (node.Problem() is { } problem)
            {
                problems.Add($"'{node.Name}': {problem}.");
            }
        }

        var stores = _nodes.SelectMany(n => n.Stores).ToList();
        foreach (var duplicate in stores.GroupBy(s => s.Name, StringComparer.Ordinal).Where(g => g.Count() > 1))
        {
            problems.Add($"The state store name '{duplicate.Key}' is used by {string.Join(", ", duplicate.Select(s => $"'{s.Operator}'"))}; each needs its own.");
        }

        foreach (var store in stores.Where(s => s.Name.StartsWith('$')))
        {
            problems.Add($"'{store.Operator}': the store name '{store.Name}' starts with '$', which is reserved.");
        }

        if (_sources.Count == 0)
        {
            problems.Add("The topology has no source; start it with StreamBuilder.Stream<T>().");
        }

        var order = TopologicalOrder(problems);
        if (problems.Count > 0)
        {
            throw new StreamTopologyException(problems);
        }

        var rekeys = MarkPartitioned(order);
        _built = new StreamTopology(
            order,
            _sources.ToDictionary(s => s.Key, s => s.Value.ToArray()),
            stores,
            rekeys,
            AssignStages(order, rekeys));
        return _built;
    }

    internal string NextName(string kind) => $"{kind}-{_nodes.Count + 1}";

    internal T Add<T>(T node, params Node[] parents)
        where T : Node
    {
        if (_built is not null)
        {
            throw new InvalidOperationException("The topology was built already; start a new StreamBuilder to build another.");
        }

        _nodes.Add(node);
        foreach (var parent in parents)
        {
            parent.AddChild(node);
        }

        if (node is NamedSinkNode writer)
        {
            _namedWriters.Add(writer);
        }

        return node;
    }

    internal void AddProblem(string problem) => _problems.Add(problem);

    private List<Node> TopologicalOrder(List<string> problems)
    {
        // Every node reachable from a node, including the sides of joins and branch outputs the builder did not list.
        var all = new List<Node>();
        var seen = new HashSet<Node>();
        var pending = new Stack<Node>(_nodes);
        while (pending.TryPop(out var node))
        {
            if (seen.Add(node))
            {
                all.Add(node);
                foreach (var child in Children(node))
                {
                    pending.Push(child);
                }
            }
        }

        var incoming = all.ToDictionary(n => n, _ => 0);
        foreach (var node in all)
        {
            foreach (var child in Children(node))
            {
                incoming[child]++;
            }
        }

        var ready = new Queue<Node>(all.Where(n => incoming[n] == 0));
        var order = new List<Node>(all.Count);
        while (ready.TryDequeue(out var node))
        {
            order.Add(node);
            foreach (var child in Children(node))
            {
                if (--incoming[child] == 0)
                {
                    ready.Enqueue(child);
                }
            }
        }

        if (order.Count < all.Count)
        {
            var cycle = all.Where(n => incoming[n] > 0).Select(n => $"'{n.Name}'");
            problems.Add($"The topology has a cycle through {string.Join(", ", cycle)}; a stream may not feed itself.");
        }

        return order;
    }

    /// <summary>
    /// Marks the operators that run in the partition tasks: those with state, timers or outputs, and every operator after
    /// one. Returns the re-keys among them that feed state again (a record moves to another partition's task after its first
    /// state: with several partitions, through the processor's repartition log).
    /// </summary>
    private static List<string> MarkPartitioned(List<Node> order)
    {
        foreach (var node in order)
        {
            if (node.RunsInPartition)
            {
                node.IsPartitioned = true;
            }

            if (node.IsPartitioned)
            {
                foreach (var child in Children(node))
                {
                    child.IsPartitioned = true;
                }
            }
        }

        return [.. order.Where(n => n is IRekeyNode && n.IsPartitioned && Descendants(n).Any(d => d.RunsInPartition && d is not SinkNode)).Select(n => n.Name)];
    }

    /// <summary>
    /// Splits the partitioned part into sub-topologies: the operators after each re-key of <paramref name="rekeys"/> run
    /// one stage later, and operators sharing state (a join's sides, a table and its table join) run in the same stage,
    /// the later one. Returns the number of stages, or 0 when the shared state keeps raising stages (a table joined with
    /// a re-key of itself), which cannot be split.
    /// </summary>
    private static int AssignStages(List<Node> order, List<string> rekeys)
    {
        var owners = new Dictionary<string, Node>(StringComparer.Ordinal);
        foreach (var node in order)
        {
            foreach (var store in node.Stores)
            {
                owners.TryAdd(store.Name, node);
            }
        }

        var boundaries = rekeys.ToHashSet(StringComparer.Ordinal);
        for (var round = 0; round <= order.Count + 1; round++)
        {
            var changed = false;
            foreach (var node in order)
            {
                foreach (var store in (node as ISharedStateNode)?.ReadsStores ?? [])
                {
                    if (owners.TryGetValue(store, out var owner) && owner.Stage != node.Stage)
                    {
                        owner.Stage = node.Stage = Math.Max(owner.Stage, node.Stage);
                        changed = true;
                    }
                }

                var next = node.Stage + (boundaries.Contains(node.Name) ? 1 : 0);
                foreach (var child in Children(node))
                {
                    if (child.Stage < next)
                    {
                        child.Stage = next;
                        changed = true;
                    }
                }
            }

            if (!changed)
            {
                return order.Count == 0 ? 1 : order.Max(n => n.Stage) + 1;
            }
        }

        return 0;
    }

    private static HashSet<Node> Descendants(Node node)
    {
        var seen = new HashSet<Node>();
        var pending = new Stack<Node>(Children(node));
        while (pending.TryPop(out var next))
        {
            if (seen.Add(next))
            {
                foreach (var child in Children(next))
                {
                    pending.Push(child);
                }
            }
        }

        return seen;
    }

    private static IEnumerable<Node> Children(Node node) => node switch
    {
        IBranchNode branch => node.Children.Concat(branch.Outputs),
        WindowedNode { LateOutput: { } late } windowed => windowed.Children.Append(late),
        _ => node.Children,
    };
}

/// <summary>A topology that is wrong: the message lists every problem, each naming its operator.</summary>
public sealed class StreamTopologyException : HeraldException
{
    /// <summary>Creates the exception from the problems found.</summary>
    public StreamTopologyException(IReadOnlyList<string> problems)
        : base("The stream topology is invalid: " + string.Join(" ", problems))
    {
        Problems = problems;
    }

    /// <summary>Each problem, naming its operator.</summary>
    public IReadOnlyList<string> Problems { get; }
}

/// <summary>
/// A built, checked topology: immutable and thread-safe (operators keep no state; each task keeps its own), so one topology
/// serves every task of a processor.
/// </summary>
public sealed class StreamTopology
{
    internal StreamTopology(List<Node> order, Dictionary<Type, Node[]> sources, List<StoreSpec> stores, List<string> rekeysAfterState, int stageCount)
    {
        Nodes = order;
        RekeysAfterState = rekeysAfterState;
        StageCount = stageCount;
        NodesByName = order.GroupBy(n => n.Name, StringComparer.Ordinal).ToDictionary(g => g.Key, g => g.First(), StringComparer.Ordinal);
        var stages = order.SelectMany(n => n.Stores.Select(s => (s.Name, n.Stage))).GroupBy(s => s.Name, StringComparer.Ordinal);
        StoreStages = stages.ToDictionary(g => g.Key, g => g.First().Stage, StringComparer.Ordinal);
        Sources = sources;
        Stores = stores;
        TimedNodes = [.. order.Where(n => n.IsTimed)];
    }

    /// <summary>The names of the state stores, which queries take.</summary>
    public IReadOnlyCollection<string> StoreNames => [.. Stores.Select(s => s.Name)];

    /// <summary>The event types the topology reads from its source.</summary>
    public IReadOnlyCollection<Type> SourceTypes => [.. Sources.Keys];

    internal IReadOnlyList<Node> Nodes { get; }

    internal IReadOnlyDictionary<Type, Node[]> Sources { get; }

    internal IReadOnlyList<StoreSpec> Stores { get; }

    internal Node[] TimedNodes { get; }

    /// <summary>Re-keys after the first stateful operator that feed state again: each starts a sub-topology.</summary>
    internal IReadOnlyList<string> RekeysAfterState { get; }

    /// <summary>The sub-topologies (1 without a re-key after state); 0 when the topology cannot be split into them.</summary>
    internal int StageCount { get; }

    internal IReadOnlyDictionary<string, Node> NodesByName { get; }

    /// <summary>The sub-topology each state store runs in.</summary>
    internal IReadOnlyDictionary<string, int> StoreStages { get; }
}
