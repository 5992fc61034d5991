namespace Herald.Benchmarks.RabbitMq;

/// <summary>One way of moving messages through RabbitMQ: publish into a queue, then consume and ack them all.</summary>
internal interface IBrokerContender : IAsyncDisposable
{
    string Name { get; }

    /// <summary>One line on the settings, for the results file.</summary>
    string Setup { get; }

    Task StartAsync(CancellationToken cancellationToken);

    /// <summary>Sends <paramref name="count"/> persistent messages to the queue with <paramref name="outstanding"/> unconfirmed at a time.</summary>
    Task PublishAsync(string queue, int count, int outstanding, CancellationToken cancellationToken);

    /// <summary>
    /// Consumes and acks <paramref name="count"/> messages from the queue and returns once the last is acked, with the
    /// still-running consumer: stopping it is not part of the measured throughput.
    /// </summary>
    Task<IAsyncDisposable> ConsumeAsync(string queue, int count, CancellationToken cancellationToken);
}

/// <summary>Stops a consumer when disposed.</summary>
internal sealed class StopOnDispose(Func<ValueTask> stop) : IAsyncDisposable
{
    public ValueTask DisposeAsync() => stop();
}

/// <summary>The settings every contender shares.</summary>
internal static class BrokerWorkload
{
    public const int MessageBytes = 300;
    public const int Prefetch = 100;
    public const int Outstanding = 100;
    public const int ConsumerConcurrency = 4;

    /// <summary>A 300-byte JSON body, the same bytes for the contenders that send bytes.</summary>
    public static readonly ReadOnlyMemory<byte> Body = CreateBody();

    /// <summary>Runs <paramref name="send"/> for indexes 0..count-1 with at most <paramref name="outstanding"/> in flight.</summary>
    public static Task RunConcurrentlyAsync(int count, int outstanding, Func<int, CancellationToken, Task> send, CancellationToken cancellationToken)
    {
        var next = -1;
        return Task.WhenAll(Enumerable.Range(0, Math.Min(outstanding, count)).Select(_ => Task.Run(async () =>
        {
            int i;
            while ((i = Interlocked.Increment(ref next)) < count)
            {
                await send(i, cancellationToken);
            }
        }, cancellationToken)));
    }

    /// <summary>Waits for the counter to complete, failing loudly instead of hanging when messages go missing.</summary>
    public static async Task WaitAsync(Task done, string contender, Func<int> received, int expected, CancellationToken cancellationToken)
    {
        try
        {
            await done.WaitAsync(TimeSpan.FromSeconds(120), cancellationToken);
        }
        catch (TimeoutException)
        {
            throw new TimeoutException($"{contender}: received {received()} of {expected} messages in 120 s.");
        }
    }

    private static byte[] CreateBody()
    {
        var prefix = "{\"orderId\":\"0197a1b2-3c4d-7e8f-9a0b-1c2d3e4f5a6b\",\"customer\":\"c-000042\",\"amount\":129.95,\"currency\":\"EUR\",\"note\":\"";
        const string suffix = "\"}";
        var body = prefix + new string('x', MessageBytes - prefix.Length - suffix.Length) + suffix;
        return System.Text.Encoding.UTF8.GetBytes(body);
    }
}
