namespace Herald.Benchmarks.Projections;

/// <summary>One side of the projection-rebuild bench: stores the orders' events once, then rebuilds its read model from them.</summary>
internal interface IRebuildContender : IAsyncDisposable
{
    string Name { get; }

    /// <summary>How it is set up, for the results file.</summary>
    string Setup { get; }

    /// <summary>Starts it and stores the events of <paramref name="orders"/> (not timed).</summary>
    Task StartAsync(IReadOnlyList<Guid> orders, CancellationToken cancellationToken);

    /// <summary>Rebuilds the read model from every stored event; completes when the rebuilt read model serves reads.</summary>
    Task RebuildAsync(CancellationToken cancellationToken);

    /// <summary>How many orders of the read model are shipped with every field set (not timed): the check of a run.</summary>
    Task<int> CountCompleteAsync(CancellationToken cancellationToken);
}
