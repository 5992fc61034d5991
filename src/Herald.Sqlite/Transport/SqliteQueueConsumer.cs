using System.Threading.Channels;
using Herald.Internal;
using Herald.Transport;

namespace Herald.Sqlite.Transport;

/// <summary>
/// Consumes one queue of the file. A fetch loop claims up to <see cref="ConsumerOptions.MaxConcurrency"/> +
/// <see cref="ConsumerOptions.Prefetch"/> messages under this consumer's lease and feeds them to
/// <see cref="ConsumerOptions.MaxConcurrency"/> workers. When nothing is claimable it sleeps until a commit in this process
/// wakes it, the next delayed message is due, or the poll interval passes. A timer renews the lease of everything it holds
/// every third of the lease duration, so a long handler keeps its message; stopping hands back what was never started.
/// A buffered message whose lease may have run out while it waited (renewals late) is handed back instead of started.
/// </summary>
internal sealed class SqliteQueueConsumer : ITransportConsumer
{
    private readonly SqliteQueueTransport _transport;
    private readonly ConsumerOptions _options;
    private readonly DeliveryHandler _handler;
    private readonly string _owner = Guid.CreateVersion7().ToString("N");
    private readonly int _capacity;
    private readonly long _leaseTicks;
    private readonly Channel<Claimed> _buffer;
    private readonly CancellationTokenSource _stopping = new();
    private readonly CancellationTokenSource _aborting = new();
    private readonly Signal _slotFreed = new();
    private readonly Lock _gate = new();
    private ITimer? _renewal;
    private Task _running = Task.CompletedTask;
    private Task? _finishing;
    private int _held;
    private long _renewedUntil;
    private int _renewing;
    private int _disposing;
    private volatile bool _crashed;
    private volatile bool _disposed;

    public SqliteQueueConsumer(SqliteQueueTransport transport, string queue, ConsumerOptions options, DeliveryHandler handler)
    {
        _transport = transport;
        Queue = queue;
        _options = options;
        _handler = handler;
        _capacity = options.MaxConcurrency + options.Prefetch;
        _leaseTicks = transport.Options.LeaseDuration.Ticks;
        _buffer = Channel.CreateBounded<Claimed>(new BoundedChannelOptions(_capacity)
        {
            FullMode = BoundedChannelFullMode.Wait,
            SingleWriter = true,
        });
    }

    public string Queue { get; }

    public void Start()
    {
        var period = _transport.Options.LeaseDuration / 3;
        _renewal = _transport.TimeProvider.CreateTimer(static s => ((SqliteQueueConsumer)s!).Renew(), this, period, period);
        var tasks = new Task[_options.MaxConcurrency + 1];
        tasks[0] = Task.Run(FetchAsync);
        for (var i = 1; i < tasks.Length; i++)
        {
            tasks[i] = Task.Run(WorkAsync);
        }

        _running = Task.WhenAll(tasks);
        Log.QueueConsumerStarted(_transport.Logger, _owner, Queue, _transport.DataSource, _options.MaxConcurrency, _capacity);
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

        _renewal?.Dispose();
        await _stopping.CancelAsync().ConfigureAwait(false);
        await _aborting.CancelAsync().ConfigureAwait(false);
        await _running.ConfigureAwait(false);
        _disposed = true;
        _transport.Forget(this);
    }

    /// <summary>The visible-at of a message nacked now with this delay.</summary>
    public long VisibleAfter(TimeSpan delay) => _transport.Now() + delay.Ticks;

    /// <summary>Writes a settlement under this consumer's lease; the slot is free afterwards whatever happened.</summary>
    public async ValueTask SettleAsync(QueuedMessage message, Func<QueueStatements, QueuedMessage, string, long, bool> settle, string what, CancellationToken cancellationToken)
    {
        if (_crashed)
        {
            return;
        }

        try
        {
            // The caller's token is not passed on: a settlement that was decided must reach the file, or the message would
            // stay leased to this consumer until it stops.
            _ = cancellationToken;
            var held = await _transport.WriteAsync(q => settle(q, message, _owner, _transport.Now()), CancellationToken.None).ConfigureAwait(false);
            if (!held)
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
            Interlocked.Decrement(ref _held);
            _slotFreed.Pulse();

            // A nacked message is claimable again, and the next message of a key only once this one is settled.
            if (message.Envelope.PartitionKey is not null || what == "nack")
            {
                _transport.Signals.Pulse(Queue);
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
            var wake = _transport.Signals.Next(Queue);
            var slotFreed = _slotFreed.Next;
            var free = _capacity - Volatile.Read(ref _held);
            if (free <= 0)
            {
                await Task.WhenAny(slotFreed, stopped.Task).ConfigureAwait(false);
                continue;
            }

            ClaimResult claimed;
            long leaseUntil = 0;
            try
            {
                claimed = await _transport.WriteAsync(
                    q =>
                    {
                        var now = _transport.Now();
                        leaseUntil = now + _leaseTicks;
                        return q.Claim(Queue, _owner, free, now, leaseUntil);
                    },
                    stop).ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (stop.IsCancellationRequested)
            {
                return;
            }
            catch (Exception ex)
            {
                Log.QueueClaimFailed(_transport.Logger, ex, Queue, _transport.DataSource);
                await SleepAsync(null, poll, stopped.Task).ConfigureAwait(false);
                continue;
            }

            if (claimed.Messages.Count > 0)
            {
                Interlocked.Add(ref _held, claimed.Messages.Count);
                foreach (var message in claimed.Messages)
                {
                    // Never full: at most _capacity messages are held, buffered or running.
                    _buffer.Writer.TryWrite(new Claimed(message, leaseUntil));
                }
            }

            if (claimed.Messages.Count == free)
            {
                continue;
            }

            var sleep = poll;
            if (claimed.NextVisibleAt is { } next)
            {
                var due = TimeSpan.FromTicks(next.UtcTicks - _transport.Now());
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
                while (!stop.IsCancellationRequested && reader.TryRead(out var claimed))
                {
                    if (LeaseIsSafe(claimed))
                    {
                        await HandleAsync(claimed.Message).ConfigureAwait(false);
                    }
                    else
                    {
                        await HandBackAsync(claimed.Message).ConfigureAwait(false);
                    }
                }
            }
        }
        catch (OperationCanceledException) when (stop.IsCancellationRequested)
        {
        }
    }

    /// <summary>
    /// True while at least a third of the lease is left as far as this consumer knows (claim or last renewal that landed),
    /// that is while no renewal is overdue: once one is, the lease may have run out and another consumer may hold the message.
    /// </summary>
    private bool LeaseIsSafe(Claimed claimed)
    {
        var leaseUntil = Math.Max(claimed.LeaseUntil, Interlocked.Read(ref _renewedUntil));
        return leaseUntil - _transport.Now() >= _leaseTicks / 3;
    }

    /// <summary>Frees the slot of a message not started and hands it back if this consumer still holds it.</summary>
    private async ValueTask HandBackAsync(QueuedMessage message)
    {
        Log.QueueMessageNotStarted(_transport.Logger, message.Envelope.MessageId, Queue);
        try
        {
            // Not left to run out: the renewals, which extend every row this consumer holds, would keep it leased here while
            // the consumer has other work. A row another consumer took meanwhile is not this owner's and stays untouched.
            await _transport.WriteAsync(
                q =>
                {
                    q.Release(message.Id, _owner);
                    return true;
                },
                CancellationToken.None).ConfigureAwait(false);
        }
#pragma warning disable CA1031 // Logged; the lease brings the message back once this consumer stops renewing.
        catch (Exception ex)
#pragma warning restore CA1031
        {
            Log.QueueHandBackFailed(_transport.Logger, ex, message.Envelope.MessageId, Queue);
        }
        finally
        {
            Interlocked.Decrement(ref _held);
            _slotFreed.Pulse();
            _transport.Signals.Pulse(Queue);
        }
    }

    private async ValueTask HandleAsync(QueuedMessage message)
    {
        var delivery = new SqliteQueueDelivery(message, Queue, this);
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
            var leaseUntil = await _transport.WriteAsync(
                q =>
                {
                    var until = _transport.Now() + _leaseTicks;
                    q.Renew(_owner, until);
                    return until;
                },
                CancellationToken.None).ConfigureAwait(false);

            // Known only once committed; monotonic, as an earlier renewal never shortens a later one's lease.
            var seen = Interlocked.Read(ref _renewedUntil);
            while (leaseUntil > seen)
            {
                var previous = Interlocked.CompareExchange(ref _renewedUntil, leaseUntil, seen);
                if (previous == seen)
                {
                    break;
                }

                seen = previous;
            }
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
            await _transport.WriteAsync(
                q =>
                {
                    q.ReleaseAll(_owner);
                    return true;
                },
                CancellationToken.None).ConfigureAwait(false);
            _transport.Signals.Pulse(Queue);
        }
#pragma warning disable CA1031 // Stopping must finish; the leases run out and the messages come back anyway.
        catch (Exception ex)
#pragma warning restore CA1031
        {
            Log.QueueReleaseFailed(_transport.Logger, ex, _owner, Queue);
        }

        Log.QueueConsumerStopped(_transport.Logger, _owner, Queue);
    }

    /// <summary>A buffered message and the lease end its claim wrote.</summary>
    private readonly record struct Claimed(QueuedMessage Message, long LeaseUntil);
}
