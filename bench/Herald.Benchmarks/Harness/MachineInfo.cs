using System.Runtime;
using System.Runtime.InteropServices;

namespace Herald.Benchmarks.Harness;

/// <summary>What the numbers were measured on, for the results file.</summary>
internal static class MachineInfo
{
    public static IReadOnlyList<(string Name, string Value)> Describe() =>
    [
        ("CPU", CpuModel() ?? RuntimeInformation.ProcessArchitecture.ToString()),
        ("Cores", Environment.ProcessorCount.ToString(System.Globalization.CultureInfo.InvariantCulture)),
        ("Memory", $"{GC.GetGCMemoryInfo().TotalAvailableMemoryBytes / (1024.0 * 1024 * 1024):0.#} GiB"),
        ("OS", RuntimeInformation.OSDescription),
        (".NET", $"{RuntimeInformation.FrameworkDescription} ({RuntimeInformation.RuntimeIdentifier})"),
        ("GC", $"{(GCSettings.IsServerGC ? "server" : "workstation")}, {GCSettings.LatencyMode}"),
        ("Date", DateTimeOffset.UtcNow.ToString("yyyy-MM-dd HH:mm 'UTC'", System.Globalization.CultureInfo.InvariantCulture)),
    ];

    private static string? CpuModel()
    {
        try
        {
            if (File.Exists("/proc/cpuinfo"))
            {
                var line = File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("model name", StringComparison.Ordinal));
                return line?[(line.IndexOf(':', StringComparison.Ordinal) + 1)..].Trim();
            }
        }
        catch (IOException)
        {
        }

        return null;
    }
}
