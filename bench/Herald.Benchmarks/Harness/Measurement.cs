using System.Diagnostics;

namespace Herald.Benchmarks.Harness;

/// <summary>One measured run: wall time and bytes allocated by the whole process (every thread) over it.</summary>
internal readonly record struct Measurement(long Messages, TimeSpan Elapsed, long AllocatedBytes, TimeSpan CpuTime, double? ForeignCpu = null, TimeSpan? PeerCpu = null)
{
    /// <summary>CPU time of this process (every thread, user and kernel) per message: less sensitive to other load than wall time.</summary>
    public double CpuMicrosecondsPerMessage => CpuTime.TotalMicroseconds / Messages;

    public double MessagesPerSecond => Messages / Elapsed.TotalSeconds;

    /// <summary>CPU time of the peer process (the broker or database server) per message, or null where not measured.</summary>
    public double? PeerCpuMicrosecondsPerMessage => PeerCpu is { } peer ? peer.TotalMicroseconds / Messages : null;

    public double BytesPerMessage => (double)AllocatedBytes / Messages;

    /// <summary>
    /// The share of the machine processes other than this one and the peer (the server it measures) used: what disturbed
    /// the run, rather than the work it asked of its server. Null where unknown.
    /// </summary>
    public double? UnrelatedCpu => ForeignCpu is { } foreign
        ? Math.Max(0, foreign - ((PeerCpu?.TotalSeconds ?? 0) / (Elapsed.TotalSeconds * Environment.ProcessorCount)))
        : null;

    /// <summary>Measures <paramref name="run"/> after a full collection, so garbage of earlier runs is not charged to it.</summary>
    /// <param name="peer">Command name of a server process (e.g. <c>beam.smp</c>) whose CPU time over the run is recorded too.</param>
    public static async Task<Measurement> TakeAsync(long messages, Func<Task> run, string? peer = null)
    {
        GC.Collect();
        GC.WaitForPendingFinalizers();
        GC.Collect();
        var peerBefore = peer is null ? null : ProcessCpu.Of(peer);
        var cpuBefore = CpuSample.Take();
        var allocatedBefore = GC.GetTotalAllocatedBytes(precise: true);
        var started = Stopwatch.GetTimestamp();
        await run().ConfigureAwait(false);
        var elapsed = Stopwatch.GetElapsedTime(started);
        var allocated = GC.GetTotalAllocatedBytes(precise: true) - allocatedBefore;
        var cpuAfter = CpuSample.Take();
        var peerAfter = peer is null ? null : ProcessCpu.Of(peer);
        return new Measurement(messages, elapsed, allocated, cpuAfter.OwnCpu - cpuBefore.OwnCpu, CpuSample.ForeignShare(cpuBefore, cpuAfter), peerAfter - peerBefore);
    }
}

/// <summary>The repetitions of one contender, summarised by their medians.</summary>
internal sealed record MeasurementSeries(string Contender, string Setup, IReadOnlyList<Measurement> Runs)
{
    public long Messages => Runs[0].Messages;

    public double MessagesPerSecond => Median(Runs.Select(r => r.MessagesPerSecond));

    public double BytesPerMessage => Median(Runs.Select(r => r.BytesPerMessage));

    public double CpuMicrosecondsPerMessage => Median(Runs.Select(r => r.CpuMicrosecondsPerMessage));

    /// <summary>Median CPU time of the peer process per message, or null where it was not measured.</summary>
    public double? PeerCpuMicrosecondsPerMessage => Runs.All(r => r.PeerCpu is not null) ? Median(Runs.Select(r => r.PeerCpuMicrosecondsPerMessage!.Value)) : null;

    public double MinMessagesPerSecond => Runs.Min(r => r.MessagesPerSecond);

    public double MaxMessagesPerSecond => Runs.Max(r => r.MessagesPerSecond);

    /// <summary>The largest share of the machine other processes took during one of the runs, or null where unknown.</summary>
    public double? MaxForeignCpu => Runs.Any(r => r.ForeignCpu is not null) ? Runs.Max(r => r.ForeignCpu ?? 0) : null;

    /// <summary>The largest share of the machine processes other than this one and the peer took during one of the runs.</summary>
    public double? MaxUnrelatedCpu => Runs.Any(r => r.UnrelatedCpu is not null) ? Runs.Max(r => r.UnrelatedCpu ?? 0) : null;

    private static double Median(IEnumerable<double> values)
    {
        var sorted = values.Order().ToArray();
        var middle = sorted.Length / 2;
        return sorted.Length % 2 == 1 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
    }
}
