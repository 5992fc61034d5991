using Herald.Benchmarks.EventStore;
using Herald.Benchmarks.Harness;
using Herald.Benchmarks.InProcess;
using Herald.Benchmarks.Nats;
using Herald.Benchmarks.RabbitMq;
using Herald.Benchmarks.Sagas;

// Named benchmarks: `dotnet run -c Release --project bench/Herald.Benchmarks -- <name> [--quick]`.
// A new one (eventstore, rabbitmq, ...) is a class implementing IBenchmark, added to this list.
IBenchmark[] benchmarks =
[
    new InProcessBenchmark(),
    new InProcessProfileBenchmark(),
    new EventStoreBenchmark(),
    new RabbitMqBenchmark(),
    new Herald.Benchmarks.PostgresQueue.PostgresQueueBenchmark(),
    new Herald.Benchmarks.Kafka.KafkaBenchmark(),
    new NatsBenchmark(),
    new SagaBenchmark(),
    new Herald.Benchmarks.AmazonSqs.SqsBenchmark(),
    new Herald.Benchmarks.Streams.StreamsBenchmark(),
    new Herald.Benchmarks.Scale.ScaleBenchmark(),
    new Herald.Benchmarks.Orders.OrdersBenchmark(),
    new Herald.Benchmarks.Projections.ProjectionRebuildBenchmark(),
];

if (args.Length == 0 || args[0] is "-h" or "--help" or "help" or "list")
{
    PrintUsage(benchmarks);
    return args.Length == 0 ? 1 : 0;
}

var benchmark = benchmarks.FirstOrDefault(b => string.Equals(b.Name, args[0], StringComparison.OrdinalIgnoreCase));
if (benchmark is null)
{
    Console.Error.WriteLine($"Unknown benchmark '{args[0]}'.");
    PrintUsage(benchmarks);
    return 1;
}

BenchmarkArgs options;
try
{
    options = BenchmarkArgs.Parse(args.AsSpan(1));
}
catch (ArgumentException ex)
{
    Console.Error.WriteLine(ex.Message);
    PrintUsage(benchmarks);
    return 1;
}

using var cancellation = new CancellationTokenSource();
Console.CancelKeyPress += (_, e) =>
{
    e.Cancel = true;
    cancellation.Cancel();
};

try
{
    await benchmark.RunAsync(options, cancellation.Token);
    return 0;
}
catch (OperationCanceledException) when (cancellation.IsCancellationRequested)
{
    Console.Error.WriteLine("Cancelled.");
    return 130;
}

static void PrintUsage(IEnumerable<IBenchmark> benchmarks)
{
    Console.WriteLine("Usage: dotnet run -c Release --project bench/Herald.Benchmarks -- <benchmark> [options]");
    Console.WriteLine();
    Console.WriteLine("Benchmarks:");
    foreach (var b in benchmarks)
    {
        Console.WriteLine($"  {b.Name,-12} {b.Description}");
    }

    Console.WriteLine();
    Console.WriteLine("Options:");
    Console.WriteLine("  --quick          small counts, one repetition: a smoke run in seconds (results file not written)");
    Console.WriteLine("  --repeat N       measured repetitions per contender (median reported; default 3)");
    Console.WriteLine("  --only A,B       run only contenders whose name contains one of these (case-insensitive)");
    Console.WriteLine("  --scenario A,B   eventstore: run only scenarios whose name contains one of these (case-insensitive)");
    Console.WriteLine("  --max-events N   scale: the largest store, backlog or table size to grow to");
    Console.WriteLine("  --max-seconds S  scale: the wall-clock bound of the whole run");
    Console.WriteLine("  --out PATH       markdown results file (default bench/results/<benchmark>.md; '-' for none)");
}
