using System.Globalization;

namespace Herald.Benchmarks.PostgresQueue;

/// <summary>
/// CPU time of the local PostgreSQL server (Linux: every process named <c>postgres</c> in /proc, plus what the postmaster
/// collected from backends that exited), so a database benchmark can say what a message costs the server, and tell the
/// server's work apart from other processes disturbing the run.
/// </summary>
internal static class ServerCpu
{
    // USER_HZ: /proc counts in 1/100 s on every mainstream Linux build.
    private const double TicksPerSecond = 100;

    /// <summary>The server's CPU time so far, or null when it cannot be read (not Linux, or the server is elsewhere).</summary>
    public static TimeSpan? Take()
    {
        try
        {
            long ticks = 0;
            var found = false;
            foreach (var dir in Directory.EnumerateDirectories("/proc"))
            {
                if (!int.TryParse(Path.GetFileName(dir), NumberStyles.None, CultureInfo.InvariantCulture, out _))
                {
                    continue;
                }

                try
                {
                    var stat = File.ReadAllText(Path.Combine(dir, "stat"));
                    var open = stat.IndexOf('(', StringComparison.Ordinal);
                    var close = stat.LastIndexOf(')');
                    if (open < 0 || close < open || stat[(open + 1)..close] != "postgres")
                    {
                        continue;
                    }

                    // After "pid (comm) ": state ppid ... utime(14) stime(15) cutime(16) cstime(17), counted from field 3.
                    var fields = stat[(close + 2)..].Split(' ');
                    for (var i = 11; i <= 14; i++)
                    {
                        ticks += long.Parse(fields[i], CultureInfo.InvariantCulture);
                    }

                    found = true;
                }
                catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or FormatException or IndexOutOfRangeException)
                {
                    // The process exited meanwhile (its time moves to the postmaster's children) or is not readable.
                }
            }

            return found ? TimeSpan.FromSeconds(ticks / TicksPerSecond) : null;
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            return null;
        }
    }
}
