using System.Threading.Channels;
using Herald.Transport;

namespace Herald.Postgres.Transport;

/// <summary>
/// Consumes one queue. A fetch loop claims up to <see cref="ConsumerOptions.MaxConcurrency"/> +
/// <see cref="ConsumerOptions.Prefetch"/> messages under this consumer's lease and feeds them to
/// <see cref="ConsumerOptions.MaxConcurrency"/> workers. While workers still have messages waiting, it claims again only
/// once half of that room is free, so a busy consumer claims in batches rather than one statement per settled message.
/// When nothing is claimable it sleeps until a notification (a commit
/// anywhere that may have made a message claimable), the next delayed message is due, or the poll interval passes — on
/// <see cref="TimeProvider"/> timers, never spinning. A timer renews the leases of everything it holds every third of the lease
/// duration, so a long handler keeps its message; stopping hands back what was never started.
/// </summary>
internal sealed class PostgresQueueConsumer : ITransportConsumer
{
    private readonly PostgresQueueTransport _transport;
    private readonly ConsumerOptions _options;
    private readonly DeliveryHandler _handler;
    private readonly Guid _owner = Guid.CreateVersion7();
    private readonly int _capacity;
    private readonly int _refill;
    private readonly Channel<QueuedMessage> _buffer;
    private readonly CancellationTokenSource _stopping = new();
    private readonly CancellationTokenSource _aborting = new();
    private readonly Herald.Internal.Signal _slotFreed = new();
    private readonly Lock _gate = new();
    private ITimer? _renewal;
    private Task _running = Task.CompletedTask;
    private Task? _finishing;
    private int _held;
    private int _renewing;
    private int _disposing;
    private volatile bool _crashed;
    private volatile bool _disposed;

    public PostgresQueueConsumer(PostgresQueueTransport transport, string queue, ConsumerOptions options, DeliveryHandler handler)
    {
        _transport = transport;
        Queue = queue;
        _options = options;
        _handler = handler;
        _capacity = options.MaxConcurrency + options.Prefetch;
        _refill = Math.Max(1, _capacity / 2);
        _buffer = Channel.CreateBounded<QueuedMessage>(new BoundedChannelOptions(_capacity)
        {
            FullMode = BoundedChannelFullMode.Wait,
            SingleWriter = true,
        });
    }

    public string Queue { get; }

    public void Start()
    {
        var period = _transport.Options.LeaseDuration / 3;
        _renewal = _transport.TimeProvider.CreateTimer(static s => ((PostgresQueueConsumer)s!).Renew(), this, period, period);
        var tasks = new Task[_options.MaxConcurrency + 1];
        tasks[0] = Task.Run(FetchAsync);
        for (var i = 1; i < tasks.Length; i++)
        {
            tasks[i] = Task.Run(WorkAsync);
        }

        _running = Task.WhenAll(tasks);
        Log.QueueConsumerStarted(_transport.Logger, _owner, Queue, _transport.Options.Schema, _options.MaxConcurrency, _capacity);
    }

    public async Task StopAsync(CancellationToken cancellationToken = default)
    {
        if (_disposed)
        {
            return;
        }

        await _stopping.CancelAsync().ConfigureAwait(false);
        using (cancellationToken.Register(static s => ((CancellationTokenSource)s!).Cancel(), _aborting))
        {
            await _running.ConfigureAwait(false);
        }

        Task finishing;
        lock (_gate)
        {
            finishing = _finishing ??= FinishAsync();
        }

        await finishing.ConfigureAwait(false);
    }

    public async ValueTask DisposeAsync()
    {
        // The transport disposes every consumer it started, including those the user disposed already.
        if (Interlocked.Exchange(ref _disposing, 1) != 0)
        {
            return;
        }

        await StopAsync(new CancellationToken(canceled: true)).ConfigureAwait(false);
        _disposed = true;
        _transport.Forget(this);
        _stopping.Dispose();
        _aborting.Dispose();
    }

    /// <summary>Stops as a killed process would: nothing settled, nothing handed back, leases left to run out.</summary>
    public async Task CrashAsync()
    {
        _crashed = true;
        if (Interlocked.Exchange(ref _disposing, 1) != 0)
        {
            return;
        }

        if (_renewal is { } renewal)
        {
            await renewal.DisposeAsync().ConfigureAwait(false);
        }

        await _stopping.CancelAsync().ConfigureAwait(false);
        await _aborting.CancelAsync().ConfigureAwait(false);
        await _running.ConfigureAwait(false);
        _disposed = true;
        _transport.Forget(this);
    }

    public ValueTask AckAsync(QueuedMessage message, CancellationToken cancellationToken) =>
        SettleAsync(message, "ack", () => _transport.AckAsync(message, _owner, CancellationToken.None), cancellationToken);

    public ValueTask NackAsync(QueuedMessage message, TimeSpan delay, CancellationToken cancellationToken) =>
        SettleAsync(message, "nack", () => _transport.NackAsync(message, _owner, delay, CancellationToken.None), cancellationToken);

    public ValueTask DeadLetterAsync(QueuedMessage message, string reason, CancellationToken cancellationToken) =>
        SettleAsync(message, "dead-letter", () => _transport.DeadLetterAsync(message, _owner, reason, CancellationToken.None), cancellationToken);

    /// <summary>Writes a settlement under this consumer's lease; the slot is free afterwards whatever happened.</summary>
    private async ValueTask SettleAsync(QueuedMessage message, string what, Func<Task<bool>> settle, CancellationToken cancellationToken)
    {
        if (_crashed)
        {
            return;
        }

        try
        {
            // The caller's token is not passed on: a settlement that was decided must reach the database, or the message
            // would stay leased to this consumer until it stops.
            _ = cancellationToken;
            if (!await settle().ConfigureAwait(false))
            {
                Log.QueueLeaseLost(_transport.Logger, what, message.Envelope.MessageId, Queue);
            }
        }
        catch (Exception ex)
        {
            Log.QueueSettleFailed(_transport.Logger, ex, message.Envelope.MessageId, Queue);
            throw;
        }
        finally
        {
            // The fetch loop is woken only when it would claim (see FetchAsync), not once per settled message.
            var free = _capacity - Interlocked.Decrement(ref _held);
            if (free >= _refill || _buffer.Reader.Count == 0)
            {
                _slotFreed.Pulse();
            }

            // A nacked message is claimable again, and the next message of a key only once this one is settled.
            if (message.Envelope.PartitionKey is not null || what == "nack")
            {
                _transport.Wakeups.Pulse(Queue);
            }
        }
    }

    private async Task FetchAsync()
    {
        var stop = _stopping.Token;
        var stopped = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        using var registration = stop.Register(static s => ((TaskCompletionSource)s!).TrySetResult(), stopped);
        var poll = _transport.Options.PollInterval;
        while (!stop.IsCancellationRequested)
        {
            // Taken before looking, so a commit between the claim and the wait still wakes the loop.
            var wake = _transport.Wakeups.Next(Queue);
            var slotFreed = _slotFreed.Next;
            var free = _capacity - Volatile.Read(ref _held);
            if (free <= 0 || (free < _refill && _buffer.Reader.Count > 0))
            {
                await Task.WhenAny(slotFreed, stopped.Task).ConfigureAwait(false);
                continue;
            }

            ClaimResult claimed;
            try
            {
                claimed = await _transport.ClaimAsync(Queue, _owner, free, stop).ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (stop.IsCancellationRequested)
            {
                return;
            }
            catch (Exception ex)
            {
                Log.QueueClaimFailed(_transport.Logger, ex, Queue, _transport.Options.Schema);
                await SleepAsync(null, poll, stopped.Task).ConfigureAwait(false);
                continue;
            }

            if (claimed.Messages.Count > 0)
            {
                Interlocked.Add(ref _held, claimed.Messages.Count);
                foreach (var message in claimed.Messages)
                {
                    // Never full: at most _capacity messages are held, buffered or running.
                    _buffer.Writer.TryWrite(message);
                }
            }

            if (claimed.Messages.Count == free)
            {
                continue;
            }

            var sleep = poll;
            if (claimed.NextVisibleAt is { } next)
            {
                var due = next - _transport.Now();
                if (due <= TimeSpan.Zero)
                {
                    continue;
                }

                sleep = due < sleep ? due : sleep;
            }

            await SleepAsync(wake, sleep, stopped.Task).ConfigureAwait(false);
        }
    }

    private async Task SleepAsync(Task? wake, TimeSpan sleep, Task stopped)
    {
        using var timer = new CancellationTokenSource();
        var elapsed = Task.Delay(sleep, _transport.TimeProvider, timer.Token);
        await (wake is null ? Task.WhenAny(elapsed, stopped) : Task.WhenAny(wake, elapsed, stopped)).ConfigureAwait(false);
        await timer.CancelAsync().ConfigureAwait(false);
    }

    private async Task WorkAsync()
    {
        var stop = _stopping.Token;
        var reader = _buffer.Reader;
        try
        {
            while (await reader.WaitToReadAsync(stop).ConfigureAwait(false))
            {
                while (!stop.IsCancellationRequested && reader.TryRead(out var message))
                {
                    await HandleAsync(message).ConfigureAwait(false);
                }
            }
        }
        catch (OperationCanceledException) when (stop.IsCancellationRequested)
        {
        }
    }

    private async ValueTask HandleAsync(QueuedMessage message)
    {
        var delivery = new PostgresQueueDelivery(message, Queue, this);
        try
        {
            await _handler(delivery, _aborting.Token).ConfigureAwait(false);
            if (!delivery.IsSettled && !_crashed)
            {
                await delivery.AckAsync(CancellationToken.None).ConfigureAwait(false);
            }
        }
#pragma warning disable CA1031 // A handler failure must never stop the consumer: the message goes back to the queue.
        catch (Exception)
#pragma warning restore CA1031
        {
            if (delivery.IsSettled || _crashed)
            {
                // Settled (a failed settlement was logged), or the "process" died: its lease decides.
            }
            else if (_aborting.IsCancellationRequested)
            {
                // Aborted by shutdown: not a failed attempt. It stays leased to this consumer until StopAsync hands back
                // everything it still holds, unchanged.
                Interlocked.Decrement(ref _held);
            }
            else
            {
                try
                {
                    await delivery.NackAsync(TimeSpan.Zero, CancellationToken.None).ConfigureAwait(false);
                }
#pragma warning disable CA1031 // Logged by SettleAsync; the lease brings the message back.
                catch (Exception)
#pragma warning restore CA1031
                {
                }
            }
        }
    }

    private void Renew()
    {
        if (Volatile.Read(ref _held) <= 0 || _crashed || Interlocked.Exchange(ref _renewing, 1) != 0)
        {
            return;
        }

        _ = RenewAsync();
    }

    private async Task RenewAsync()
    {
        try
        {
            await _transport.RenewAsync(_owner, CancellationToken.None).ConfigureAwait(false);
        }
#pragma warning disable CA1031 // Runs on a timer with nobody to report to: logged, and the next renewal tries again.
        catch (Exception ex)
#pragma warning restore CA1031
        {
            if (!_crashed && !_stopping.IsCancellationRequested)
            {
                Log.QueueLeaseRenewalFailed(_transport.Logger, ex, _owner, Queue);
            }
        }
        finally
        {
            Volatile.Write(ref _renewing, 0);
        }
    }

    private async Task FinishAsync()
    {
        if (_renewal is { } renewal)
        {
            await renewal.DisposeAsync().ConfigureAwait(false);
        }

        while (_buffer.Reader.TryRead(out _))
        {
            // Prefetched, never started: handed back below with everything else this consumer still holds.
        }

        if (_crashed)
        {
            return;
        }

        try
        {
            await _transport.ReleaseAllAsync(_owner, CancellationToken.None).ConfigureAwait(false);
            _transport.Wakeups.Pulse(Queue);
        }
#pragma warning disable CA1031 // Stopping must finish; the leases run out and the messages come back anyway.
        catch (Exception ex)
#pragma warning restore CA1031
        {
            Log.QueueReleaseFailed(_transport.Logger, ex, _owner, Queue);
        }

        Log.QueueConsumerStopped(_transport.Logger, _owner, Queue);
    }
}
