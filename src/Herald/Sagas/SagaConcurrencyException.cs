namespace Herald.Sagas;

/// <summary>
/// A saga instance was saved by someone else since it was loaded (or an instance with its id already exists). Nothing
/// was written; the message that caused the save is run again against the fresh state.
/// </summary>
/// <param name="sagaType">The saga's name.</param>
/// <param name="id">The instance's id.</param>
/// <param name="expectedVersion">The version the save expected (0: a new instance).</param>
/// <param name="actualVersion">The stored version, or null when no instance is stored.</param>
public sealed class SagaConcurrencyException(string sagaType, string id, long expectedVersion, long? actualVersion)
    : HeraldException(actualVersion is { } actual
        ? $"Concurrency conflict on saga '{sagaType}' instance '{id}': expected version {expectedVersion}, but it is at version {actual}. Nothing was written; reload and retry."
        : $"Concurrency conflict on saga '{sagaType}' instance '{id}': expected version {expectedVersion}, but the instance does not exist. Nothing was written.")
{
    /// <summary>The saga's name.</summary>
    public string SagaType { get; } = sagaType;

    /// <summary>The instance's id.</summary>
    public string Id { get; } = id;

    /// <summary>The version the save expected (0: a new instance).</summary>
    public long ExpectedVersion { get; } = expectedVersion;

    /// <summary>The stored version, or null when no instance is stored.</summary>
    public long? ActualVersion { get; } = actualVersion;
}
