using System.Globalization;
using Npgsql;

namespace Herald.Benchmarks.PostgresQueue;

/// <summary>
/// CPU time of the PostgreSQL backends serving this run (found by application name in <c>pg_stat_activity</c>, read from
/// /proc, so only for a server on this machine), so a database benchmark can say what a message costs the server without
/// counting what other clients of the same server do meanwhile.
/// </summary>
internal sealed class ServerCpu(NpgsqlDataSource admin, string applicationPrefix)
{
    // USER_HZ: /proc counts in 1/100 s on every mainstream Linux build.
    private const double TicksPerSecond = 100;

    /// <summary>The application name prefix every measured connection carries.</summary>
    public string ApplicationPrefix => applicationPrefix;

    /// <summary>CPU ticks so far of each backend of this run, or null when they cannot be read.</summary>
    public async Task<Dictionary<int, long>?> SampleAsync(CancellationToken cancellationToken)
    {
        await using var command = admin.CreateCommand("SELECT pid FROM pg_stat_activity WHERE starts_with(application_name, $1)");
        command.Parameters.Add(new NpgsqlParameter<string> { TypedValue = applicationPrefix });
        var ticks = new Dictionary<int, long>();
        await using (var reader = await command.ExecuteReaderAsync(cancellationToken))
        {
            while (await reader.ReadAsync(cancellationToken))
            {
                var pid = reader.GetInt32(0);
                if (Read(pid) is not { } t)
                {
                    return null;
                }

                ticks[pid] = t;
            }
        }

        return ticks;
    }

    /// <summary>CPU time the backends used between two samples; a backend that started in between counts from zero.</summary>
    public static TimeSpan? Between(Dictionary<int, long>? before, Dictionary<int, long>? after)
    {
        if (before is null || after is null)
        {
            return null;
        }

        var ticks = after.Sum(a => a.Value - before.GetValueOrDefault(a.Key));
        return TimeSpan.FromSeconds(ticks / TicksPerSecond);
    }

    private static long? Read(int pid)
    {
        try
        {
            var stat = File.ReadAllText($"/proc/{pid}/stat");

            // After "pid (comm) ": state ppid ... utime(14) stime(15), counted from field 3.
            var fields = stat[(stat.LastIndexOf(')') + 2)..].Split(' ');
            return long.Parse(fields[11], CultureInfo.InvariantCulture) + long.Parse(fields[12], CultureInfo.InvariantCulture);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException or FormatException or IndexOutOfRangeException or ArgumentOutOfRangeException)
        {
            return null;
        }
    }
}
