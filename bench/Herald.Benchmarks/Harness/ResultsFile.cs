using System.Text;

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

    /// <summary>
    /// How every results file opens: its title, the command line it ran with, and the table of the machine, with
    /// <paramref name="rows"/> (the servers it used) added to it. The caller goes on writing into the returned text.
    /// </summary>
    public static StringBuilder Open(BenchmarkArgs args, string benchmark, string title, params (string Name, string Value)[] rows)
    {
        var text = new StringBuilder();
        text.AppendLine("# " + title);
        text.AppendLine();
        text.AppendLine(args.Heading(benchmark));
        text.AppendLine();
        var machine = new MarkdownTable("Machine", "");
        foreach (var (name, value) in MachineInfo.Describe().Concat(rows))
        {
            machine.Add(name, value);
        }

        text.Append(machine);
        return text;
    }

    /// <summary>Prints the results and writes them to the results file, unless a quick run asked for none.</summary>
    public static void Publish(BenchmarkArgs args, string benchmark, string markdown)
    {
        Console.WriteLine();
        Console.WriteLine(markdown);
        if (args.Quick && args.Out is null)
        {
            Console.WriteLine("(quick run: results file not written; pass --out PATH to write one)");
        }
        else if (Resolve(args, benchmark) is { } path)
        {
            Write(path, markdown);
            Console.WriteLine($"Results written to {path}");
        }
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
