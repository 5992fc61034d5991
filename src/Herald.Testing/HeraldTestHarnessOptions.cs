namespace Herald.Testing;

/// <summary>Settings of the test harness, validated when its host starts.</summary>
public sealed class HeraldTestHarnessOptions
{
    /// <summary>How long an expectation waits when the call names no timeout; generous, since it only matters when a test fails.</summary>
    public TimeSpan DefaultTimeout { get; set; } = TimeSpan.FromSeconds(10);

    /// <summary>Where the fake clock starts.</summary>
    public DateTimeOffset StartTime { get; set; } = new(2030, 1, 1, 0, 0, 0, TimeSpan.Zero);

    internal IEnumerable<string> Validate()
    {
        if (DefaultTimeout <= TimeSpan.Zero)
        {
            yield return $"HeraldTestHarnessOptions.DefaultTimeout is {DefaultTimeout}; it must be positive.";
        }
    }
}
