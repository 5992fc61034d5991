using System.Globalization;

namespace Herald.Benchmarks.Harness;

/// <summary>
/// CPU time (user + kernel) used so far by every process with a given command name, read from /proc (Linux); the
/// broker's share of a run, which this process's own CPU time does not show. Null where /proc cannot be read.
/// </summary>
internal static class ProcessCpu
{
    // USER_HZ: /proc/[pid]/stat counts in 1/100 s on every mainstream Linux build.
    private const double TicksPerSecond = 100;

    public static TimeSpan? Of(string command)
    {
        try
        {
            long ticks = 0;
            var found = false;
            foreach (var dir in Directory.EnumerateDirectories("/proc"))
            {
                var pid = Path.GetFileName(dir);
                if (pid.Length == 0 || !char.IsAsciiDigit(pid[0]))
                {
                    continue;
                }

                try
                {
                    var stat = File.ReadAllText(Path.Combine(dir, "stat"));

                    // pid (comm) state ppid ... utime(14) stime(15): comm may hold spaces, so split after its ')'.
                    var open = stat.IndexOf('(', StringComparison.Ordinal);
                    var close = stat.LastIndexOf(')');
                    if (open < 0 || close < open || stat[(open + 1)..close] != command)
                    {
                        continue;
                    }

                    var fields = stat[(close + 2)..].Split(' ');
                    ticks += long.Parse(fields[11], CultureInfo.InvariantCulture) + long.Parse(fields[12], CultureInfo.InvariantCulture);
                    found = true;
                }
                catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or FormatException or IndexOutOfRangeException)
                {
                    // The process ended while it was read, or is not ours to read.
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
