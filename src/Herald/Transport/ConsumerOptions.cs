namespace Herald.Transport;

/// <summary>How a consumer takes deliveries from its queue.</summary>
public sealed record ConsumerOptions
{
    /// <summary>One delivery at a time, 16 prefetched.</summary>
    public static ConsumerOptions Default { get; } = new();

    /// <summary>How many deliveries the handler runs at once (at least 1).</summary>
    public int MaxConcurrency { get; init; } = 1;

    /// <summary>How many deliveries the consumer may hold beyond those running (at least <see cref="MaxConcurrency"/>).</summary>
    public int Prefetch { get; init; } = 16;

    /// <summary>Throws when the options are impossible.</summary>
    public void Validate()
    {
        if (MaxConcurrency < 1)
        {
            throw new ArgumentOutOfRangeException(nameof(MaxConcurrency), MaxConcurrency, "MaxConcurrency must be at least 1.");
        }

        if (Prefetch < 1)
        {
            throw new ArgumentOutOfRangeException(nameof(Prefetch), Prefetch, "Prefetch must be at least 1.");
        }
    }
}
