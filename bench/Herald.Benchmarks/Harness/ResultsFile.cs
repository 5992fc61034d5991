namespace Herald.Benchmarks.Harness;

/// <summary>Where results files go: bench/results/ of the repository the harness runs in.</summary>
internal static class ResultsFile
{
    /// <summary>The path to write, or null when the run asked for none.</summary>
    public static string? Resolve(BenchmarkArgs args, string benchmark)
    {
        if (args.Out == "-")
        {
            return null;
        }

        if (args.Out is { } explicitPath)
        {
            return Path.GetFullPath(explicitPath);
        }

        var root = FindRepositoryRoot(Environment.CurrentDirectory) ?? FindRepositoryRoot(AppContext.BaseDirectory) ?? Environment.CurrentDirectory;
        return Path.Combine(root, "bench", "results", benchmark + ".md");
    }

    public static void Write(string path, string markdown)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        File.WriteAllText(path, markdown);
    }

    private static string? FindRepositoryRoot(string start)
    {
        for (var dir = new DirectoryInfo(start); dir is not null; dir = dir.Parent)
        {
            if (File.Exists(Path.Combine(dir.FullName, "Herald.slnx")))
            {
                return dir.FullName;
            }
        }

        return null;
    }
}
