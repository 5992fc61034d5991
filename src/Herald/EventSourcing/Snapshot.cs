namespace Herald.EventSourcing;

/// <summary>The serialized state of an aggregate at a version of its stream.</summary>
/// <param name="Stream">The stream.</param>
/// <param name="Version">The stream version the state includes.</param>
/// <param name="StateType">A stable name of the state's type, so a changed type can be detected.</param>
/// <param name="SchemaVersion">The state's schema version; a snapshot of another schema version is ignored.</param>
/// <param name="State">The serialized state.</param>
/// <param name="CreatedAt">When it was taken.</param>
public sealed record Snapshot(string Stream, long Version, string StateType, int SchemaVersion, ReadOnlyMemory<byte> State, DateTimeOffset CreatedAt);
