using System.Text.Json;
using System.Text.Json.Serialization;
using Herald.Benchmarks.Harness;

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

    /// <summary>The message every contender sends, as an object (MassTransit serializes it itself).</summary>
    public static readonly OrderPlaced Message = CreateMessage();

    /// <summary>The message as 300 bytes of JSON, the same bytes for the contenders that send bytes.</summary>
    public static readonly ReadOnlyMemory<byte> Body = JsonSerializer.SerializeToUtf8Bytes(Message, BrokerJson.Default.OrderPlaced);

    /// <summary>
    /// What every consuming handler does with a body: deserializes it to the message type, as a real handler's pipeline
    /// would (MassTransit does it before its handler runs), so no contender is measured skipping that work.
    /// </summary>
    public static OrderPlaced Decode(ReadOnlySpan<byte> body) =>
        JsonSerializer.Deserialize(body, BrokerJson.Default.OrderPlaced) ?? throw new InvalidOperationException("The body decoded to null.");

    /// <summary>
    /// Warm-up passes until the JIT settled (<see cref="JitWarmup"/>): each pass publishes then consumes
    /// <paramref name="count"/> messages with every contender, on the queue <paramref name="queueFor"/> names for the pass.
    /// </summary>
    public static async Task<WarmupReport> WarmUpAsync(IReadOnlyList<IBrokerContender> contenders, Func<IBrokerContender, string, string> queueFor, int count, bool quick, CancellationToken cancellationToken)
    {
        Console.WriteLine("  warm-up");
        var warmed = await JitWarmup.RunAsync(async pass =>
        {
            foreach (var c in contenders)
            {
                var queue = queueFor(c, $"warmup{pass}");
                await c.PublishAsync(queue, count, Outstanding, cancellationToken);
                await (await c.ConsumeAsync(queue, count, cancellationToken)).DisposeAsync();
            }
        }, quick);
        Console.WriteLine($"  {warmed.Describe()}");
        return warmed;
    }

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

    private static OrderPlaced CreateMessage()
    {
        var message = new OrderPlaced(Guid.Parse("0197a1b2-3c4d-7e8f-9a0b-1c2d3e4f5a6b"), "c-000042", 129.95m, "EUR", "");
        var padding = MessageBytes - JsonSerializer.SerializeToUtf8Bytes(message, BrokerJson.Default.OrderPlaced).Length;
        return message with { Note = new string('x', padding) };
    }
}

/// <summary>The message of the workload: an order with a note that pads its JSON to <see cref="BrokerWorkload.MessageBytes"/>.</summary>
internal sealed record OrderPlaced(Guid OrderId, string Customer, decimal Amount, string Currency, string Note);

/// <summary>Source-generated JSON for the workload's message, used alike by the contenders that handle bytes.</summary>
[JsonSourceGenerationOptions(JsonSerializerDefaults.Web)]
[JsonSerializable(typeof(OrderPlaced))]
internal sealed partial class BrokerJson : JsonSerializerContext;
