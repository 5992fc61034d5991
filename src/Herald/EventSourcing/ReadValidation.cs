namespace Herald.EventSourcing;

/// <summary>The argument checks every event store runs before a read touches storage, so all stores refuse the same inputs.</summary>
public static class ReadValidation
{
    /// <summary>Throws an <see cref="ArgumentException"/> for an invalid stream name, a version below 1 or a negative count.</summary>
    public static void ValidateStreamRead(string stream, long fromVersion, int maxCount)
    {
        StreamName.Validate(stream);
        ArgumentOutOfRangeException.ThrowIfLessThan(fromVersion, 1);
        ArgumentOutOfRangeException.ThrowIfNegative(maxCount);
    }

    /// <summary>Throws an <see cref="ArgumentOutOfRangeException"/> for a negative start position or a negative count.</summary>
    public static void ValidateAllRead(long fromPositionExclusive, int maxCount)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(fromPositionExclusive);
        ArgumentOutOfRangeException.ThrowIfNegative(maxCount);
    }
}
