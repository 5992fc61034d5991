namespace Herald.Sagas;

/// <summary>
/// A saga instance was saved by someone else since it was loaded (or an instance with its id already exists). Nothing
/// was written; the message that caused the save is run again against the fresh state.
/// </summary>
public sealed class SagaConcurrencyException : HeraldException
{
    /// <summary>Creates the exception for a save of <paramref name="sagaType"/>/<paramref name="id"/> that expected <paramref name="expectedVersion"/>.</summary>
    public SagaConcurrencyException(string sagaType, string id, long expectedVersion, long? actualVersion)
        : base(actualVersion is { } actual
            ? $"Concurrency conflict on saga '{sagaType}' instance '{id}': expected version {expectedVersion}, but it is at version {actual}. Nothing was written; reload and retry."
            : $"Concurrency conflict on saga '{sagaType}' instance '{id}': expected version {expectedVersion}, but the instance does not exist. Nothing was written.")
    {
        SagaType = sagaType;
        Id = id;
        ExpectedVersion = expectedVersion;
        ActualVersion = actualVersion;
    }

    /// <summary>The saga's name.</summary>
    public string SagaType { get; }

    /// <summary>The instance's id.</summary>
    public string Id { get; }

    /// <summary>The version the save expected (0: a new instance).</summary>
    public long ExpectedVersion { get; }

    /// <summary>The stored version, or null when no instance is stored.</summary>
    public long? ActualVersion { get; }
}
