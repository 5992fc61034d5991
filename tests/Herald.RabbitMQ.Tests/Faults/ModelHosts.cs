using System.Collections.Concurrent;
using System.Diagnostics;
using Herald.Conformance;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Xunit.Abstractions;

namespace Herald.RabbitMQ.Tests.Faults;

/// <summary>
/// The hosts a seeded fault model drives: numbered, named after the test on the broker (so a kill finds theirs only),
/// started, stopped gracefully or abruptly, and their connections killed from the broker, each step in the model's log.
/// Picks come from the model's own <see cref="Random"/>, so a seed replays the same run.
/// </summary>
internal sealed class ModelHosts(
    string prefix,
    Random random,
    ILoggerProvider logs,
    ModelLog model,
    Action<HostApplicationBuilder, int> configure) : IAsyncDisposable
{
    private readonly List<(int Number, IHost Host)> _hosts = [];
    private int _next;

    public int Count => _hosts.Count;

    /// <summary>The host started first of those still running (the one a model's final checks read through).</summary>
    public IHost First => _hosts[0].Host;

    /// <summary>The broker-side name of host <paramref name="number"/>'s connections (its <c>ClientProvidedName</c>).</summary>
    public string Name(int number) => $"{prefix}-h{number}";

    /// <summary>A running host, picked at random.</summary>
    public (int Number, IHost Host) Pick() => _hosts[random.Next(_hosts.Count)];

    public async Task StartAsync()
    {
        var number = ++_next;
        var builder = Host.CreateApplicationBuilder();
        builder.Logging.ClearProviders();
        builder.Logging.AddProvider(logs);
        configure(builder, number);
        var host = builder.Build();
        await host.StartAsync();
        _hosts.Add((number, host));
        model.Log($"driver: started h{number}");
    }

    /// <summary>Stops a host picked at random (abruptly: its stop cancelled at once), and starts another when none is left.</summary>
    public async Task StopAsync(bool abruptly)
    {
        var index = random.Next(_hosts.Count);
        var (number, host) = _hosts[index];
        _hosts.RemoveAt(index);
        model.Log($"driver: stops h{number}{(abruptly ? " abruptly" : string.Empty)}");
        using (var deadline = new CancellationTokenSource(abruptly ? TimeSpan.Zero : TimeSpan.FromSeconds(1)))
        {
            await host.StopAsync(deadline.Token);
        }

        Interlocked.Increment(ref model.Faults);
        host.Dispose();
        model.Log($"driver: h{number} stopped");
        if (_hosts.Count == 0)
        {
            await StartAsync();
        }
    }

    /// <summary>
    /// Kills a random host's connections from the broker: both, or only the one named <paramref name="only"/>
    /// (<c>consume</c>, <c>publish</c>).
    /// </summary>
    public async Task KillConnectionsAsync(string? only)
    {
        var (number, _) = Pick();
        var killed = await BrokerAdmin.KillConnectionsAsync(Name(number) + ":" + only, only is null ? 2 : 1);

        // Counted once it struck: whatever started before it (and so may be done again) started before the count.
        Interlocked.Increment(ref model.Faults);
        model.Log($"driver: killed {killed} connection(s) of h{number}{(only is null ? string.Empty : $" ({only})")}");
    }

    /// <summary>
    /// True when every queue of <paramref name="endpoint"/> (its retry and dead-letter queues among them) has 0 ready and 0
    /// unacked, and it has a consumer per running host; a queue that has not is logged.
    /// </summary>
    public async ValueTask<bool> QueuesSettledAsync(string endpoint)
    {
        foreach (var (queue, ready, unacked) in await BrokerAdmin.QueueCountsAsync(endpoint))
        {
            if (ready != 0 || unacked != 0)
            {
                model.Log($"check: '{queue}' has {ready} ready, {unacked} unacked");
                return false;
            }
        }

        return await BrokerAdmin.ConsumerCountAsync(endpoint) == Count;
    }

    public async ValueTask DisposeAsync()
    {
        foreach (var (_, host) in _hosts)
        {
            using var deadline = new CancellationTokenSource(TimeSpan.FromSeconds(5));
            await host.StopAsync(deadline.Token);
            host.Dispose();
        }

        _hosts.Clear();
    }
}

/// <summary>How a seeded fault model reports a failed run: its seed, the violations, every item, the log, the hosts' logs.</summary>
internal static class ModelReport
{
    public static void FailIfAny(
        ITestOutputHelper output,
        int seed,
        IReadOnlyList<string> failures,
        string itemsHeading,
        IEnumerable<object> items,
        ModelLog model,
        TestOutputLogger logs)
    {
        if (failures.Count == 0)
        {
            return;
        }

        output.WriteLine($"seed {seed}: {failures.Count} violation(s)");
        foreach (var failure in failures)
        {
            output.WriteLine(failure);
        }

        output.WriteLine(itemsHeading + ":");
        foreach (var item in items)
        {
            output.WriteLine("  " + item);
        }

        output.WriteLine("operation log:");
        foreach (var line in model.Lines)
        {
            output.WriteLine("  " + line);
        }

        logs.WriteTo(output);
        Assert.Fail($"seed {seed}: {string.Join(" | ", failures.Take(5))}");
    }
}

/// <summary>A seeded fault model's operation log (timed from its start), the signal that a handler moved, and the faults so far.</summary>
public class ModelLog
{
    private readonly ConcurrentQueue<string> _log = new();
    private readonly Stopwatch _clock = Stopwatch.StartNew();

    public SemaphoreSlim Progress { get; } = new(0);

    /// <summary>Faults struck so far (connection kills, host stops): a run may be repeated once per fault since it started.</summary>
    public int Faults;

    public void Log(string line) => _log.Enqueue($"{_clock.ElapsedMilliseconds,6} ms  {line}");

    public IEnumerable<string> Lines => _log;
}

/// <summary>The number of the model host a handler runs on.</summary>
public sealed class ModelHostTag(int number)
{
    public int Number { get; } = number;
}
