using Herald.Reliability.Retry;

namespace Herald.Hosting;

/// <summary>
/// Upper bounds of the core's time settings, so a setting that passes the check at start also works once running: a
/// longer one threw where it was used (a timer, a date sum), stopping the host, its stop or every message.
/// </summary>
internal static class OptionLimits
{
    /// <summary>Longest interval, timeout, delay or back-off: what every transport and timer holds (about 24.8 days).</summary>
    internal static readonly TimeSpan LongestWait = RetryPolicyBuilder.LongestDelay;

    /// <summary>Longest age, window or retention (added to or taken from the time of day): 100 years.</summary>
    internal static readonly TimeSpan LongestSpan = TimeSpan.FromDays(36_500);

    private const string WaitWhy = "the longest wait a timer or transport holds";

    private const string SpanWhy = "100 years";

    /// <summary>A problem, naming its setting, for each wait above <see cref="LongestWait"/>.</summary>
    internal static IEnumerable<string> Waits(string options, params (string Setting, TimeSpan Value)[] settings) =>
        TooLong(options, settings, LongestWait, WaitWhy);

    /// <summary>A problem, naming its setting, for each span above <see cref="LongestSpan"/>.</summary>
    internal static IEnumerable<string> Spans(string options, params (string Setting, TimeSpan Value)[] settings) =>
        TooLong(options, settings, LongestSpan, SpanWhy);

    /// <summary>What is wrong with a wait above <see cref="LongestWait"/> (the text after its setting's name), or null.</summary>
    internal static string? TooLongWait(TimeSpan value) => TooLong(value, LongestWait, WaitWhy);

    /// <summary>What is wrong with a span above <see cref="LongestSpan"/> (the text after its setting's name), or null.</summary>
    internal static string? TooLongSpan(TimeSpan value) => TooLong(value, LongestSpan, SpanWhy);

    private static string? TooLong(TimeSpan value, TimeSpan longest, string why) =>
        value > longest ? $"must be at most {longest} ({why}), not {value}." : null;

    private static IEnumerable<string> TooLong(string options, (string Setting, TimeSpan Value)[] settings, TimeSpan longest, string why)
    {
        foreach (var (setting, value) in settings)
        {
            if (TooLong(value, longest, why) is { } problem)
            {
                yield return $"{options}.{setting} {problem}";
            }
        }
    }
}
