using System.Diagnostics;
using System.Globalization;

namespace Herald.Benchmarks.Harness;

/// <summary>
/// How much of the machine other processes used during a run (Linux: /proc/stat against this process's CPU time), so a
/// run disturbed by a build or test run next door can be detected and repeated instead of silently skewing the table.
/// </summary>
internal readonly record struct CpuSample(long BusyTicks, long TotalTicks, TimeSpan OwnCpu)
{
    // USER_HZ: /proc/stat counts in 1/100 s on every mainstream Linux build.
    private const double TicksPerSecond = 100;

    public static CpuSample Take()
    {
        using var process = Process.GetCurrentProcess();
        var own = process.TotalProcessorTime;
        try
        {
            var fields = File.ReadLines("/proc/stat").First().Split(' ', StringSplitOptions.RemoveEmptyEntries);

            // cpu user nice system idle iowait irq softirq steal ...
            var values = fields.Skip(1).Take(8).Select(v => long.Parse(v, CultureInfo.InvariantCulture)).ToArray();
            var idle = values[3] + values[4];
            var total = values.Sum();
            return new CpuSample(total - idle, total, own);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or FormatException or InvalidOperationException)
        {
            return new CpuSample(-1, -1, own);
        }
    }

    /// <summary>
    /// Waits (at most <paramref name="maxWait"/>) until other processes use at most <paramref name="share"/> of the
    /// machine over half a second; returns false when the machine stayed busy.
    /// </summary>
    public static async Task<bool> WaitForQuietAsync(double share, TimeSpan maxWait, CancellationToken cancellationToken)
    {
        var started = Stopwatch.GetTimestamp();
        while (true)
        {
            var before = Take();
            await Task.Delay(500, cancellationToken).ConfigureAwait(false);
            var foreign = ForeignShare(before, Take());
            if (foreign is null || foreign <= share)
            {
                return true;
            }

            if (Stopwatch.GetElapsedTime(started) >= maxWait)
            {
                return false;
            }
        }
    }

    /// <summary>Share of all cores' time used by other processes between two samples (0..1), or null where unknown.</summary>
    public static double? ForeignShare(CpuSample before, CpuSample after)
    {
        if (before.TotalTicks < 0 || after.TotalTicks <= before.TotalTicks)
        {
            return null;
        }

        var total = after.TotalTicks - before.TotalTicks;
        var busy = after.BusyTicks - before.BusyTicks;
        var own = (after.OwnCpu - before.OwnCpu).TotalSeconds * TicksPerSecond;
        return Math.Clamp((busy - own) / total, 0, 1);
    }
}
