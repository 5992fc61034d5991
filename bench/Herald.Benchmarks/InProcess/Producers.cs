namespace Herald.Benchmarks.InProcess;

/// <summary>The producer side shared by every contender, so they all publish the same way.</summary>
internal static class Producers
{
    /// <summary>Runs <paramref name="producers"/> tasks that together publish messages 0..messages-1, each awaiting its publishes in turn.</summary>
    public static Task RunAsync(int messages, int producers, Func<int, ValueTask> publish, CancellationToken cancellationToken)
    {
        var tasks = new Task[producers];
        for (var p = 0; p < producers; p++)
        {
            var first = p;
            tasks[p] = Task.Run(
                async () =>
                {
                    for (var i = first; i < messages; i += producers)
                    {
                        await publish(i).ConfigureAwait(false);
                    }
                },
                cancellationToken);
        }

        return Task.WhenAll(tasks);
    }

    /// <summary>A generous deadline for one run, so a lost message fails the run instead of hanging it.</summary>
    public static TimeSpan Timeout(int messages) => TimeSpan.FromSeconds(30 + (messages / 5_000));
}
