namespace Herald.Projections;

/// <summary>When a projection sees the events it handles.</summary>
public enum ProjectionMode
{
    /// <summary>
    /// In a catch-up subscription on the global log, one runner across the nodes sharing the store (leader election). Its
    /// checkpoint commits with its read-model writes when both live in one database: each event is applied once.
    /// </summary>
    Async,

    /// <summary>
    /// In the unit of work that appends the events (through an aggregate repository): the read model changes in the same
    /// commit as the events, or not at all. It cannot be rebuilt in place.
    /// </summary>
    Inline,
}
