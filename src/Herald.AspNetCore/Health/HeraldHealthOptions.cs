using Herald.Internal;

namespace Herald.AspNetCore;

/// <summary>Thresholds of Herald's health checks (set in <c>services.AddHealthChecks().AddHerald(o => ...)</c>).</summary>
public sealed class HeraldHealthOptions
{
    /// <summary>Longest a check may wait on its store or broker before it reports Unhealthy. Default 5 seconds.</summary>
    public TimeSpan Timeout { get; set; } = TimeSpan.FromSeconds(5);

    /// <summary>A projection further behind the head of the log than this many positions is Degraded. Default 1000.</summary>
    public long MaxProjectionLag { get; set; } = 1000;

    /// <summary>More dead letters than this within <see cref="DeadLetterWindow"/> is Degraded. Default 10.</summary>
    public long MaxDeadLetterGrowth { get; set; } = 10;

    /// <summary>The window over which new dead letters are counted. Default 5 minutes.</summary>
    public TimeSpan DeadLetterWindow { get; set; } = TimeSpan.FromMinutes(5);

    /// <summary>When true (the default), the transport check declares this host's endpoint queue, a round trip to the broker.</summary>
    public bool ProbeTransport { get; set; } = true;

    /// <summary>
    /// Adds the settings too long to wait on (<see cref="Timeout"/>, a cancellation timer) or to take from the time of day
    /// (<see cref="DeadLetterWindow"/>): longer ones passed the start and made every check throw.
    /// </summary>
    internal static void Check(HeraldHealthOptions options, OptionsProblems problems)
    {
        problems.AtMostLongestWait(nameof(Timeout), options.Timeout);
        problems.AtMostLongestSpan(nameof(DeadLetterWindow), options.DeadLetterWindow);
    }
}
