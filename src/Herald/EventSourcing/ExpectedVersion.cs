namespace Herald.EventSourcing;

/// <summary>What an append expects of the stream's current version (optimistic concurrency). Versions start at 1.</summary>
public readonly record struct ExpectedVersion
{
    private const long AnyValue = -2;
    private const long NoStreamValue = -1;
    private const long StreamExistsValue = -4;

    private ExpectedVersion(long value) => Value = value;

    /// <summary>Append whatever the stream's state.</summary>
    public static ExpectedVersion Any { get; } = new(AnyValue);

    /// <summary>The stream must not exist yet (no events).</summary>
    public static ExpectedVersion NoStream { get; } = new(NoStreamValue);

    /// <summary>The stream must already have at least one event.</summary>
    public static ExpectedVersion StreamExists { get; } = new(StreamExistsValue);

    /// <summary>The raw value: an exact version (1 or more) or one of the negative sentinels.</summary>
    public long Value { get; }

    /// <summary>True for <see cref="Any"/>.</summary>
    public bool IsAny => Value == AnyValue;

    /// <summary>True for <see cref="NoStream"/>.</summary>
    public bool IsNoStream => Value == NoStreamValue;

    /// <summary>True for <see cref="StreamExists"/>.</summary>
    public bool IsStreamExists => Value == StreamExistsValue;

    /// <summary>True for an exact version.</summary>
    public bool IsExact => Value >= 1;

    /// <summary>The stream's last event must have exactly this version (1 or more).</summary>
    public static ExpectedVersion Exactly(long version)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(version, 1);
        return new ExpectedVersion(version);
    }

    /// <summary><see cref="NoStream"/> for version 0, else <see cref="Exactly"/>: what an aggregate loaded at that version expects.</summary>
    public static ExpectedVersion FromLoadedVersion(long version) => version == 0 ? NoStream : Exactly(version);

    /// <summary>True when a stream at <paramref name="currentVersion"/> (0 = it does not exist or was deleted) meets this expectation.</summary>
    public bool IsSatisfiedBy(long currentVersion) => Value switch
    {
        AnyValue => true,
        NoStreamValue => currentVersion == 0,
        StreamExistsValue => currentVersion > 0,
        _ => Value >= 1 && currentVersion == Value,
    };

    /// <inheritdoc />
    public override string ToString() => Value switch
    {
        AnyValue => "any",
        NoStreamValue => "no stream",
        StreamExistsValue => "stream exists",
        _ => Value.ToString(System.Globalization.CultureInfo.InvariantCulture),
    };
}
