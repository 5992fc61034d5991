using Npgsql;

namespace Herald.Benchmarks.PostgresQueue;

/// <summary>One way of running a queue in PostgreSQL: fill a fresh queue from concurrent senders, then drain it with competing consumers.</summary>
internal interface IQueueContender : IAsyncDisposable
{
    string Name { get; }

    /// <summary>One line on what it does, for the results file.</summary>
    string Setup { get; }

    /// <summary>The consumer shapes it is drained with; empty for a send-only contender.</summary>
    IReadOnlyList<DrainShape> Drains { get; }

    /// <summary>A fresh queue in a fresh table (its own schema); disposing the round drops it.</summary>
    Task<IQueueRound> NewRoundAsync(CancellationToken cancellationToken);
}

/// <summary>One fresh queue of a contender.</summary>
internal interface IQueueRound : IAsyncDisposable
{
    /// <summary>Sends <paramref name="count"/> messages from <paramref name="senders"/> concurrent tasks; returns when every send has returned.</summary>
    Task SendAsync(int count, int senders, CancellationToken cancellationToken);

    /// <summary>Opens the consumers' instances (connections, pools) without consuming yet, so that is not timed.</summary>
    Task<IQueueDrain> PrepareDrainAsync(DrainShape shape, CancellationToken cancellationToken);
}

/// <summary>Consumers ready to start; disposing stops them and closes their instances.</summary>
internal interface IQueueDrain : IAsyncDisposable
{
    /// <summary>Starts every consumer and returns once <paramref name="count"/> messages are handled and acknowledged.</summary>
    Task RunAsync(int count, CancellationToken cancellationToken);
}

/// <summary>How a queue is drained: <see cref="Instances"/> independent instances (as many processes), each consuming with <see cref="Concurrency"/>.</summary>
internal sealed record DrainShape(int Instances, int Concurrency)
{
    public string Label => $"{Instances} × {Concurrency}";
}

/// <summary>The settings every contender shares.</summary>
internal static class QueueWorkload
{
    public const int MessageBytes = 300;
    public const int Senders = 16;
    public const string MessageType = "order-placed";

    /// <summary>A 300-byte JSON body, the same bytes for every contender.</summary>
    public static readonly byte[] Body = CreateBody();

    /// <summary>Runs <paramref name="send"/> for indexes 0..count-1 from <paramref name="senders"/> tasks, each awaiting its send before the next.</summary>
    public static Task RunConcurrentlyAsync(int count, int senders, Func<CancellationToken, Task> send, CancellationToken cancellationToken)
    {
        var next = -1;
        return Task.WhenAll(Enumerable.Range(0, Math.Min(senders, count)).Select(_ => Task.Run(async () =>
        {
            while (Interlocked.Increment(ref next) < count)
            {
                await send(cancellationToken);
            }
        }, cancellationToken)));
    }

    /// <summary>Waits for the drain to finish, failing loudly instead of hanging when messages go missing.</summary>
    public static async Task WaitAsync(Task done, string contender, Func<int> received, int expected, CancellationToken cancellationToken)
    {
        try
        {
            await done.WaitAsync(TimeSpan.FromSeconds(120), cancellationToken);
        }
        catch (TimeoutException)
        {
            throw new TimeoutException($"{contender}: {received()} of {expected} messages handled in 120 s.");
        }
    }

    /// <summary>A data source as the Herald queue builds its own: a pool of its own with Npgsql's automatic preparation on.</summary>
    public static NpgsqlDataSource DataSource(string connectionString, string applicationName)
    {
        var builder = new NpgsqlDataSourceBuilder(connectionString);
        builder.ConnectionStringBuilder.ApplicationName = applicationName;
        builder.ConnectionStringBuilder.MaxAutoPrepare = 32;
        builder.ConnectionStringBuilder.AutoPrepareMinUsages = 2;
        return builder.Build();
    }

    public static async Task ExecuteAsync(NpgsqlDataSource dataSource, string sql, CancellationToken cancellationToken)
    {
        await using var command = dataSource.CreateCommand(sql);
        await command.ExecuteNonQueryAsync(cancellationToken);
    }

    private static byte[] CreateBody()
    {
        var prefix = "{\"orderId\":\"0197a1b2-3c4d-7e8f-9a0b-1c2d3e4f5a6b\",\"customer\":\"c-000042\",\"amount\":129.95,\"currency\":\"EUR\",\"note\":\"";
        const string suffix = "\"}";
        var body = prefix + new string('x', MessageBytes - prefix.Length - suffix.Length) + suffix;
        return System.Text.Encoding.UTF8.GetBytes(body);
    }
}
