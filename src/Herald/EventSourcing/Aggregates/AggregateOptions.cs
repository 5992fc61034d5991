namespace Herald.EventSourcing.Aggregates;

/// <summary>Per aggregate type: its stream category and how often it is snapshotted.</summary>
public sealed record AggregateOptions
{
    /// <summary>The defaults: the category from the type name, no snapshots.</summary>
    public static AggregateOptions Default { get; } = new();

    /// <summary>The stream category (no '-'); null uses the type name in camelCase (<c>ShoppingCart</c> -> <c>shoppingCart</c>).</summary>
    public string? Category { get; init; }

    /// <summary>
    /// Take a snapshot each time a save crosses a multiple of this many events (in a unit of work, not on the first save of an
    /// aggregate loaded as new, whose stream version is known only at the commit); 0 never snapshots.
    /// </summary>
    public int SnapshotEvery { get; init; }
}
