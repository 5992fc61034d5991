using System.Diagnostics;
using Herald.Messages;
using Herald.Transport;

namespace Herald.Benchmarks.Scale;

/// <summary>
/// A durable queue (PostgreSQL or SQLite) whose backlog grows step by step. The measured sends and claims go through the
/// transport; between steps the backlog is filled as a bulk import would, by <paramref name="bulkAdd"/> (one SQL statement per
/// chunk copying the newest message the transport wrote, with new message ids), since sending a million messages one by one
/// would measure the send again at the cost of most of the run.
/// </summary>
internal sealed class ScaleQueue(string name, Func<CancellationToken, Task<ITransport>> open, Func<long, CancellationToken, Task> bulkAdd, Func<ValueTask> cleanUp) : IAsyncDisposable
{
    /// <summary>The queue's name.</summary>
    public const string Queue = "scale";

    private const int FillChunk = 250_000;
    private static readonly ReadOnlyMemory<byte> Body = new byte[300];
    private ITransport? _transport;
    private long _backlog;

    public string Name => name;

    /// <summary>Messages waiting in the queue.</summary>
    public long Backlog => Interlocked.Read(ref _backlog);

    /// <summary>Send rate of the last growth, messages per second (to predict the next step's time).</summary>
    public double LoadRate { get; private set; } = 10_000;

    /// <summary>Seconds the last step's measurements took (to predict the next step's time).</summary>
    public double MeasureSeconds { get; set; } = 10;

    private ITransport Transport => _transport ?? throw new InvalidOperationException("Not started.");

    public async Task StartAsync(CancellationToken cancellationToken) => _transport = await open(cancellationToken);

    /// <summary>Adds messages in bulk (chunks of <see cref="FillChunk"/>, one transaction each) until the backlog holds <paramref name="target"/>.</summary>
    public async Task GrowAsync(long target, CancellationToken cancellationToken)
    {
        var start = Backlog;
        if (start >= target)
        {
            return;
        }

        var clock = Stopwatch.StartNew();
        while (Backlog < target)
        {
            var add = Math.Min(FillChunk, target - Backlog);
            await bulkAdd(add, cancellationToken);
            Interlocked.Add(ref _backlog, add);
        }

        LoadRate = Math.Max(1, Backlog - start) / clock.Elapsed.TotalSeconds;
    }

    /// <summary>Sends <paramref name="count"/> messages from 64 concurrent senders (the seed that bulk fills copy).</summary>
    public async Task SeedAsync(int count, CancellationToken cancellationToken)
    {
        var left = count;
        await Task.WhenAll(Enumerable.Range(0, 64).Select(_ => Task.Run(async () =>
        {
            while (Interlocked.Decrement(ref left) >= 0)
            {
                await SendOneAsync(cancellationToken);
                Interlocked.Increment(ref _backlog);
            }
        }, cancellationToken)));
    }

    /// <summary>16 senders awaiting each send, for <paramref name="duration"/>; messages per second.</summary>
    public async Task<double> MeasureSendAsync(TimeSpan duration, CancellationToken cancellationToken)
    {
        var sent = 0L;
        var clock = Stopwatch.StartNew();
        await Task.WhenAll(Enumerable.Range(0, 16).Select(_ => Task.Run(async () =>
        {
            while (clock.Elapsed < duration)
            {
                await SendOneAsync(cancellationToken);
                Interlocked.Increment(ref sent);
                Interlocked.Increment(ref _backlog);
            }
        }, cancellationToken)));
        return sent / clock.Elapsed.TotalSeconds;
    }

    /// <summary>One consumer (concurrency 4) claims and acks <paramref name="count"/> messages off the head of the backlog; messages per second.</summary>
    public async Task<double> MeasureClaimAckAsync(int count, CancellationToken cancellationToken)
    {
        var acked = 0;
        var done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var clock = Stopwatch.StartNew();
        await using (var consumer = await Transport.ConsumeAsync(Queue, new ConsumerOptions { MaxConcurrency = 4 }, async (delivery, ct) =>
        {
            // Every delivery is acked (one the consumer took past the count too), so nothing is left leased.
            await delivery.AckAsync(ct);
            if (Interlocked.Increment(ref acked) == count)
            {
                done.TrySetResult();
            }
        }, cancellationToken))
        {
            await done.Task.WaitAsync(TimeSpan.FromMinutes(5), cancellationToken);
        }

        var elapsed = clock.Elapsed;
        Interlocked.Add(ref _backlog, -Volatile.Read(ref acked));
        return count / elapsed.TotalSeconds;
    }

    public async ValueTask DisposeAsync()
    {
        if (_transport is not null)
        {
            await _transport.DisposeAsync();
        }

        await cleanUp();
    }

    private ValueTask SendOneAsync(CancellationToken cancellationToken) =>
        Transport.SendAsync(Queue, new Envelope { MessageId = Guid.CreateVersion7(), MessageType = "scale-message", Time = DateTimeOffset.UtcNow, Body = Body }, cancellationToken: cancellationToken);
}
