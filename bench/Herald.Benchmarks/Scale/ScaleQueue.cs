using System.Diagnostics;
using Herald.Messages;
using Herald.Transport;

namespace Herald.Benchmarks.Scale;

/// <summary>A durable queue (PostgreSQL or SQLite) with a backlog grown step by step through <c>SendAsync</c>.</summary>
internal sealed class ScaleQueue(string name, Func<CancellationToken, Task<ITransport>> open, Func<ValueTask> cleanUp) : IAsyncDisposable
{
    private const string Queue = "scale";
    private static readonly ReadOnlyMemory<byte> Body = new byte[300];
    private ITransport? _transport;
    private long _backlog;

    public string Name => name;

    /// <summary>Messages waiting in the queue.</summary>
    public long Backlog => Interlocked.Read(ref _backlog);

    /// <summary>Send rate of the last growth, messages per second (to predict the next step's time).</summary>
    public double LoadRate { get; private set; } = 10_000;

    private ITransport Transport => _transport ?? throw new InvalidOperationException("Not started.");

    public async Task StartAsync(CancellationToken cancellationToken) => _transport = await open(cancellationToken);

    /// <summary>Sends from 64 concurrent senders (grouped into shared commits) until the backlog holds <paramref name="target"/>.</summary>
    public async Task GrowAsync(long target, CancellationToken cancellationToken)
    {
        var start = Backlog;
        var clock = Stopwatch.StartNew();
        await Task.WhenAll(Enumerable.Range(0, 64).Select(_ => Task.Run(async () =>
        {
            while (Interlocked.Increment(ref _backlog) <= target)
            {
                await SendOneAsync(cancellationToken);
            }

            Interlocked.Decrement(ref _backlog);
        }, cancellationToken)));
        LoadRate = Math.Max(1, Backlog - start) / clock.Elapsed.TotalSeconds;
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
