namespace Herald.Transport;

/// <summary>Per-call options of a send or publish.</summary>
public sealed record SendOptions
{
    /// <summary>No delay.</summary>
    public static SendOptions Default { get; } = new();

    /// <summary>Deliver no earlier than this long from now (time from the transport's <see cref="TimeProvider"/>).</summary>
    public TimeSpan? Delay { get; init; }
}
