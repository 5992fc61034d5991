namespace Herald.Benchmarks.Harness;

/// <summary>The options common to every benchmark.</summary>
internal sealed record BenchmarkArgs
{
    /// <summary>Small counts for a smoke run.</summary>
    public bool Quick { get; init; }

    /// <summary>Measured repetitions per contender; the median is reported. Null: the benchmark's default.</summary>
    public int? Repeat { get; init; }

    /// <summary>Name fragments of the contenders to run; empty: all.</summary>
    public IReadOnlyList<string> Only { get; init; } = [];

    /// <summary>Name fragments of the scenarios to run, for benchmarks made of scenarios (eventstore); empty: all.</summary>
    public IReadOnlyList<string> Scenarios { get; init; } = [];

    /// <summary>Where to write the markdown results; null: the default path; "-": nowhere.</summary>
    public string? Out { get; init; }

    /// <summary>The largest size a growing benchmark (scale) goes to; null: its default.</summary>
    public long? MaxEvents { get; init; }

    /// <summary>The wall-clock bound of a growing benchmark (scale), in seconds; null: its default.</summary>
    public int? MaxSeconds { get; init; }

    /// <summary>The line a results file opens with: the command that produced it, with every option given, and what kind of run it was.</summary>
    public string Heading(string benchmark)
    {
        var options = (Quick ? " --quick" : "")
            + (Repeat is { } repeat ? " --repeat " + repeat.ToString(System.Globalization.CultureInfo.InvariantCulture) : "")
            + (Only.Count > 0 ? " --only " + Quoted(string.Join(',', Only)) : "")
            + (Scenarios.Count > 0 ? " --scenario \"" + string.Join(',', Scenarios) + "\"" : "")
            + (MaxEvents is { } maxEvents ? " --max-events " + maxEvents.ToString(System.Globalization.CultureInfo.InvariantCulture) : "")
            + (MaxSeconds is { } maxSeconds ? " --max-seconds " + maxSeconds.ToString(System.Globalization.CultureInfo.InvariantCulture) : "");
        return $"`dotnet run -c Release --project bench/Herald.Benchmarks -- {benchmark}{options}` — {(Quick ? "quick smoke run: small counts, not representative" : "full run")}.";
    }

    // A value with a space is quoted, so the heading is a command that runs as written.
    private static string Quoted(string value) => value.Contains(' ', StringComparison.Ordinal) ? "\"" + value + "\"" : value;

    public bool Includes(string contender) =>
        Only.Count == 0 || Only.Any(o => contender.Contains(o, StringComparison.OrdinalIgnoreCase));

    public bool IncludesScenario(string scenario) =>
        Scenarios.Count == 0 || Scenarios.Any(o => scenario.Contains(o, StringComparison.OrdinalIgnoreCase));

    public static BenchmarkArgs Parse(ReadOnlySpan<string> args)
    {
        var result = new BenchmarkArgs();
        for (var i = 0; i < args.Length; i++)
        {
            switch (args[i])
            {
                case "--quick":
                    result = result with { Quick = true };
                    break;
                case "--repeat" when i + 1 < args.Length && int.TryParse(args[i + 1], out var repeat) && repeat > 0:
                    result = result with { Repeat = repeat };
                    i++;
                    break;
                case "--only" when i + 1 < args.Length:
                    result = result with { Only = args[i + 1].Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries) };
                    i++;
                    break;
                case "--scenario" when i + 1 < args.Length:
                    result = result with { Scenarios = args[i + 1].Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries) };
                    i++;
                    break;
                case "--max-events" when i + 1 < args.Length && long.TryParse(args[i + 1], out var maxEvents) && maxEvents > 0:
                    result = result with { MaxEvents = maxEvents };
                    i++;
                    break;
                case "--max-seconds" when i + 1 < args.Length && int.TryParse(args[i + 1], out var maxSeconds) && maxSeconds > 0:
                    result = result with { MaxSeconds = maxSeconds };
                    i++;
                    break;
                case "--out" when i + 1 < args.Length:
                    result = result with { Out = args[i + 1] };
                    i++;
                    break;
                default:
                    throw new ArgumentException($"Unknown or incomplete option '{args[i]}'.");
            }
        }

        return result;
    }
}
