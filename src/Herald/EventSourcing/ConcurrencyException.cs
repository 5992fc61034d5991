namespace Herald.EventSourcing;

/// <summary>Thrown when an append's expected version does not hold; nothing was written.</summary>
public sealed class ConcurrencyException : HeraldException
{
    /// <summary>Creates the exception naming the stream, the expected and the actual version (0 when the stream does not exist).</summary>
    public ConcurrencyException(string stream, ExpectedVersion expected, long actual)
        : this($"Concurrency conflict on stream '{stream}': expected version {expected}, but the stream is at version {actual}. Nothing was written; reload and retry.", stream, expected, actual)
    {
    }

    /// <summary>Creates the exception for an idempotency mismatch (the same event ids with other content or at another place).</summary>
    public ConcurrencyException(string stream, ExpectedVersion expected, long actual, string detail)
        : this($"Concurrency conflict on stream '{stream}': expected version {expected}, stream at version {actual}: {detail} Nothing was written.", stream, expected, actual)
    {
    }

    private ConcurrencyException(string message, string stream, ExpectedVersion expected, long actual)
        : base(message)
    {
        Stream = stream;
        Expected = expected;
        Actual = actual;
    }

    /// <summary>The stream.</summary>
    public string Stream { get; }

    /// <summary>What the append expected.</summary>
    public ExpectedVersion Expected { get; }

    /// <summary>The stream's actual version (0 when it does not exist).</summary>
    public long Actual { get; }
}
