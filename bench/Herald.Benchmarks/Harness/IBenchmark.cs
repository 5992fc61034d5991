namespace Herald.Benchmarks.Harness;

/// <summary>One named benchmark of the harness, chosen by the first command-line argument.</summary>
internal interface IBenchmark
{
    /// <summary>The name typed on the command line, such as <c>inprocess</c>.</summary>
    string Name { get; }

    /// <summary>One line for the usage text.</summary>
    string Description { get; }

    /// <summary>Runs the benchmark, prints its table and writes its results file.</summary>
    Task RunAsync(BenchmarkArgs args, CancellationToken cancellationToken);
}
