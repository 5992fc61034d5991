using System.Collections.Concurrent;
using System.Threading.Channels;
using Herald.Diagnostics;
using Herald.Hosting;
using Herald.Transport;
using Microsoft.Extensions.Logging;

namespace Herald.Internal;

/// <summary>
/// Consumes one queue whose messages are leased, over an <see cref="ILeasedQueueBackend{TMessage}"/>. A fetch loop claims up
/// to <see cref="ConsumerOptions.MaxConcurrency"/> + <see cref="ConsumerOptions.Prefetch"/> messages and feeds them to
/// <see cref="ConsumerOptions.MaxConcurrency"/> workers. When nothing is claimable it sleeps until the backend wakes it, the
/// next delayed message is due, or the poll interval passes, on <see cref="TimeProvider"/> timers, never spinning. A
/// renewal thread of its own extends the leases of everything it holds every third of the lease, so a long handler keeps
/// its message even while handlers starve the thread pool; when a renewal finds a message's claim lost, that handler's
/// cancellation token fires and its settlement is refused by the backend. A handler that returns acks, one that throws
/// nacks (no delay); stopping hands back what was never started.
/// </summary>
/// <typeparam name="TMessage">The backend's claimed message.</typeparam>
/// <remarks>An extension point for Herald's adapter packages, not for application code; it may change in any release.</remarks>
public sealed class LeasedQueueConsumer<TMessage> : ITransportConsumer, IConsumerCompletion
    where TMessage : LeasedMessage
{
    private static readonly TimeSpan FirstSettleRetryDelay = TimeSpan.FromMilliseconds(50);
    private static readonly TimeSpan MaxSettleRetryDelay = TimeSpan.FromSeconds(1);
    private static readonly TimeSpan FirstClaimRetryDelay = TimeSpan.FromMilliseconds(100);
    private static readonly TimeSpan MaxClaimRetryDelay = TimeSpan.FromSeconds(10);

    private readonly ILeasedQueueBackend<TMessage> _backend;
    private readonly LeasedQueueSettings _settings;
    private readonly DeliveryHandler _handler;
    private readonly Action<LeasedQueueConsumer<TMessage>>? _disposed;
    private readonly int _workers;
    private readonly int _capacity;
    private readonly int _refill;
    private readonly long _safeLeaseTicks;
    private readonly Channel<Claimed> _buffer;

    // Every message claimed and not yet settled or handed back, with its claim; the renewal thread removes a claim it found
    // lost and cancels its handler's token, and a worker starts a buffered message only while its claim is still here.
    private readonly ConcurrentDictionary<TMessage, Claimed> _leases = new();

    // Set by the renewal timer and by stopping; the renewal thread waits on it as well as on the system clock.
    private readonly ManualResetEventSlim _renewalDue = new(false);
    private readonly TaskCompletionSource _renewalStopped = new(TaskCreationOptions.RunContinuationsAsynchronously);

    // A latch rather than a pulse: a slot freed between the fetch loop's look at the room and its wait is not missed.
    private readonly Channel<bool> _slotFreed = Channel.CreateBounded<bool>(new BoundedChannelOptions(1) { FullMode = BoundedChannelFullMode.DropWrite });
    private readonly CancellationTokenSource _stopping = new();
    private readonly CancellationTokenSource _aborting = new();
    private readonly Lock _gate = new();
    private ITimer? _renewal;
    private Task _running = Task.CompletedTask;
    private Task[] _tasks = [];
    private Task? _finishing;
    private int _held;
    private int _disposing;

    // Settlements past the abandoned check and not yet ended, and what an abandoning stop waits on for them, both under
    // _gate: the stop must not hand back a message whose settlement is still going to reach the engine.
    private int _settling;
    private TaskCompletionSource? _settled;

    // Renewals go on until the consumer has finished, not only until it stops taking work: a graceful stop waits for the
    // handlers still running, and they rely on their leases until they settle.
    private volatile bool _renewalEnding;
    private volatile bool _isDisposed;

    // Set when a stop went on without handlers that ignored their cancellation: their messages are handed back with the
    // rest, so what those handlers settle when they end is not sent.
    private volatile bool _abandoned;

    /// <summary>Creates a consumer of <paramref name="queue"/>; <see cref="Start"/> starts it.</summary>
    /// <param name="backend">This consumer's hold on the queue (one backend per consumer).</param>
    /// <param name="queue">The queue, as deliveries name it.</param>
    /// <param name="options">Concurrency and prefetch, validated by the caller.</param>
    /// <param name="handler">Handles each delivery.</param>
    /// <param name="settings">Lease timing and the engine's differences.</param>
    /// <param name="disposed">Called once the consumer is disposed (the transport forgets it).</param>
    public LeasedQueueConsumer(
        ILeasedQueueBackend<TMessage> backend,
        string queue,
        ConsumerOptions options,
        DeliveryHandler handler,
        LeasedQueueSettings settings,
        Action<LeasedQueueConsumer<TMessage>>? disposed = null)
    {
        ArgumentNullException.ThrowIfNull(backend);
        ArgumentNullException.ThrowIfNull(queue);
        ArgumentNullException.ThrowIfNull(options);
        ArgumentNullException.ThrowIfNull(handler);
        ArgumentNullException.ThrowIfNull(settings);
        settings.Validate();
        _backend = backend;
        _handler = handler;
        _settings = settings;
        _disposed = disposed;
        Queue = queue;
        _workers = options.MaxConcurrency;
        _capacity = options.MaxConcurrency + options.Prefetch;
        _refill = settings.ClaimsInBatches ? Math.Max(1, _capacity / 2) : 1;
        _safeLeaseTicks = settings.LeaseDuration.Ticks / 3;
        _buffer = Channel.CreateBounded<Claimed>(new BoundedChannelOptions(_capacity)
        {
            FullMode = BoundedChannelFullMode.Wait,
            SingleWriter = true,
        });
    }

    /// <inheritdoc />
    public string Queue { get; }

    /// <inheritdoc />
    public Task Completion { get; private set; } = Task.CompletedTask;

    /// <summary>Starts the fetch loop, the workers and the lease renewal thread.</summary>
    public void Start()
    {
        var period = _settings.LeaseDuration / 3;

        // The thread waits on the system clock by itself; the timer is what moves it on a clock a test drives.
        _renewal = _settings.TimeProvider.CreateTimer(static s => ((LeasedQueueConsumer<TMessage>)s!)._renewalDue.Set(), this, period, period);
        var thread = new Thread(static s => ((LeasedQueueConsumer<TMessage>)s!).RenewLoop())
        {
            IsBackground = true,
            Name = "Herald lease renewal",
            Priority = ThreadPriority.AboveNormal,
        };
        thread.UnsafeStart(this);
        var tasks = new Task[_workers + 1];
        tasks[0] = Task.Run(FetchAsync);
        for (var i = 1; i < tasks.Length; i++)
        {
            tasks[i] = Task.Run(WorkAsync);
        }

        _tasks = tasks;
        _running = Task.WhenAll(tasks);

        // Any loop that ends on its own: the fetch loop's end leaves the workers waiting, and a worker's end a slot idle.
        Completion = ConsumerCompletion.WhenEndedAsync(Task.WhenAny(tasks).Unwrap(), _stopping.Token);
        Log.LeasedQueueConsumerStarted(_settings.Logger, _settings.Name, _workers, _capacity);
    }

    /// <inheritdoc />
    public async Task StopAsync(CancellationToken cancellationToken = default)
    {
        if (_isDisposed)
        {
            return;
        }

        await _stopping.CancelAsync().ConfigureAwait(false);
        if (!_abandoned && !await ConsumerStop.WaitAsync(_running, _aborting, _settings.TimeProvider, cancellationToken).ConfigureAwait(false))
        {
            int settling;
            lock (_gate)
            {
                _abandoned = true;
                settling = _settling;
                if (settling > 0)
                {
                    _settled = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
                }
            }

            // A handler whose settlement is under way is not abandoned with its message: FinishAsync waits for the settlement.
            AdapterLog.HandlersAbandoned(_settings.Logger, Queue, Math.Max(0, _tasks.Count(static t => !t.IsCompleted) - settling));
            if (settling > 0)
            {
                Log.LeasedQueueWaitingForSettlements(_settings.Logger, settling, _settings.Name);
            }
        }

        Task finishing;
        lock (_gate)
        {
            finishing = _finishing ??= FinishAsync();
        }

        await finishing.ConfigureAwait(false);
    }

    /// <inheritdoc />
    public async ValueTask DisposeAsync()
    {
        // A transport disposes every consumer it started, including those the user disposed already.
        if (Interlocked.Exchange(ref _disposing, 1) != 0)
        {
            return;
        }

        await StopAsync(new CancellationToken(canceled: true)).ConfigureAwait(false);
        _isDisposed = true;
        _disposed?.Invoke(this);
        _stopping.Dispose();
        _aborting.Dispose();
        _renewalDue.Dispose();
    }

    /// <summary>Writes a settlement under this consumer's lease; the slot is free afterwards whatever happened.</summary>
    internal async ValueTask SettleAsync(
        TMessage message,
        LeasedSettlement settlement,
        TimeSpan delay,
        IReadOnlyDictionary<string, string>? headers,
        string? reason)
    {
        // Looked at and counted together, so a stop that abandons its handlers either refuses this settlement or waits for it
        // before handing back what it holds: handed back first, the message could reach another consumer, and this settlement
        // (under its old claim, which SQS applies to the new delivery) delete it or hide it while that consumer runs it.
        bool abandoned;
        lock (_gate)
        {
            abandoned = _abandoned;
            if (!abandoned)
            {
                _settling++;
            }
        }

        if (abandoned)
        {
            // Its handler ended after the stop abandoned it and handed the message back; another consumer may hold it now.
            Log.LeasedQueueAbandonedNotSettled(_settings.Logger, Describe(settlement), message.Envelope.MessageId, _settings.Name);
            FreeSlot();
            return;
        }

        // One method, not two: a second async layer would allocate a second box for every settlement that goes async.
        try
        {
            // Settled from here on, so a renewal that finds its row gone now does not report it lost.
            var claim = TakeForSettling(message);
            var leaseUntil = 0L;
            if (claim is not null)
            {
                if (!_settings.RenewsUntilSettled)
                {
                    await SettlingAsync(claim).ConfigureAwait(false);
                }

                leaseUntil = claim.LeaseUntil;
            }

            try
            {
                // Where the engine would apply it to whatever claim holds the message now, a nack or dead letter after the
                // lease ran out (or was found lost) is not sent: it would expose, or copy and delete, a delivery another
                // consumer may be handling; the message comes back instead. An ack still goes: the message was handled, and
                // removing it spares a consumer that has not received it yet a second run (one that has is running it twice
                // either way).
                var held = !(_settings.SettlesOnlyUnderItsLease && settlement != LeasedSettlement.Ack && leaseUntil <= _settings.TimeProvider.GetUtcNow().UtcTicks)
                    && await SettleWithRetriesAsync(message, settlement, delay, headers, reason, leaseUntil).ConfigureAwait(false);
                if (!held)
                {
                    Log.LeasedQueueLeaseLost(_settings.Logger, Describe(settlement), message.Envelope.MessageId, _settings.Name);
                    HeraldDiagnostics.LeasesLost.Add(1, new KeyValuePair<string, object?>(MetricNames.LeaseKindTag, "queue"));
                }
            }
            catch (Exception ex)
            {
                Log.LeasedQueueSettleFailed(_settings.Logger, ex, message.Envelope.MessageId, _settings.Name);
                throw;
            }
            finally
            {
                Settled(message, claim);
                FreeSlot();
            }
        }
        finally
        {
            lock (_gate)
            {
                if (--_settling == 0)
                {
                    _settled?.TrySetResult();
                }
            }
        }
    }

    /// <summary>
    /// Writes the settlement; when the engine fails (a database restarting), tries again with a growing pause while the
    /// message still holds a third of its lease (<paramref name="leaseUntil"/>, UTC ticks, as the last renewal that landed
    /// before the settlement began left it) after the pause, rather than leave it to come back only when its lease runs out
    /// (issue 10). Counted from the lease's end, not from the first attempt: after failed renewals, or a slow attempt, a
    /// retry could otherwise run after the lease ran out, while another consumer handles the message (on SQS, a dead-letter
    /// copy sent as it is handled again). Not from a renewal landing meanwhile (<see cref="LeasedQueueSettings.RenewsUntilSettled"/>):
    /// a settlement the engine keeps refusing would then be retried, and its message kept, for as long as renewals land.
    /// No caller's token: a settlement that was decided must reach the engine.
    /// </summary>
    private async ValueTask<bool> SettleWithRetriesAsync(
        TMessage message,
        LeasedSettlement settlement,
        TimeSpan delay,
        IReadOnlyDictionary<string, string>? headers,
        string? reason,
        long leaseUntil)
    {
        var time = _settings.TimeProvider;
        var pause = FirstSettleRetryDelay;
        while (true)
        {
            try
            {
                return settlement switch
                {
                    LeasedSettlement.Ack => await _backend.AckAsync(message, CancellationToken.None).ConfigureAwait(false),
                    LeasedSettlement.Nack => await _backend.NackAsync(message, delay, headers, CancellationToken.None).ConfigureAwait(false),
                    _ => await _backend.DeadLetterAsync(message, reason!, headers, CancellationToken.None).ConfigureAwait(false),
                };
            }
            catch (Exception ex) when (leaseUntil - (time.GetUtcNow() + pause).UtcTicks >= _safeLeaseTicks)
            {
                Log.LeasedQueueSettleRetrying(_settings.Logger, ex, Describe(settlement), message.Envelope.MessageId, _settings.Name, pause);
                await Task.Delay(pause, time).ConfigureAwait(false);
                pause = TimeSpan.FromTicks(Math.Min(pause.Ticks * 2, MaxSettleRetryDelay.Ticks));
            }
        }
    }

    /// <summary>
    /// The claim of a message about to be settled or handed back; null when this consumer no longer holds it. Where renewals
    /// cannot undo a settlement (<see cref="LeasedQueueSettings.RenewsUntilSettled"/>) it stays in the renewals until
    /// <see cref="Settled"/>, so its lease does not run out while the settlement waits (for a connection of a full pool),
    /// marked as settling, so a renewal that finds the message gone (settled) or lapsed leaves the verdict to the settlement
    /// rather than report it lost. Otherwise it leaves them now, and <see cref="SettlingAsync"/> waits for a renewal in flight.
    /// </summary>
    private Claimed? TakeForSettling(TMessage message)
    {
        Claimed? claim;
        if (_settings.RenewsUntilSettled)
        {
            return _leases.TryGetValue(message, out claim) && claim.TryBeginSettling() ? claim : null;
        }

        return _leases.TryRemove(message, out claim) ? claim : null;
    }

    /// <summary>Takes a claim <see cref="TakeForSettling"/> left in the renewals out of them, once its settlement returned.</summary>
    private void Settled(TMessage message, Claimed? claim)
    {
        if (claim is not null && _settings.RenewsUntilSettled)
        {
            _leases.TryRemove(new KeyValuePair<TMessage, Claimed>(message, claim));
        }
    }

    /// <summary>
    /// Takes the claim out of the renewals; waits first for a renewal in flight that covers it to land, so that renewal cannot
    /// land after the settlement and undo it (an SQS nack's delay overwritten by the renewed visibility).
    /// </summary>
    private static async ValueTask SettlingAsync(Claimed claim)
    {
        while (claim.TrySettle() is { } renewal)
        {
            await renewal.ConfigureAwait(false);
        }
    }

    private static string Describe(LeasedSettlement settlement) => settlement switch
    {
        LeasedSettlement.Ack => "ack",
        LeasedSettlement.Nack => "nack",
        _ => "dead-letter",
    };

    /// <summary>One message less held; the fetch loop is woken only when it would claim (see <see cref="FetchAsync"/>).</summary>
    private void FreeSlot()
    {
        var free = _capacity - Interlocked.Decrement(ref _held);
        if (free >= _refill || _buffer.Reader.Count == 0)
        {
            _slotFreed.Writer.TryWrite(true);
        }
    }

    private async Task FetchAsync()
    {
        var stop = _stopping.Token;
        var stopped = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        using var registration = stop.Register(static s => ((TaskCompletionSource)s!).TrySetResult(), stopped);
        var poll = _settings.PollInterval;

        // A claim that fails at once (an engine refusing, an SQS queue missing) is tried again after a pause that doubles up
        // to a cap and starts again after a claim that worked: after the poll interval alone, a long-polling backend (poll
        // interval zero) spun, logging a warning per turn.
        var claimRetry = FirstClaimRetryDelay;
        while (!stop.IsCancellationRequested)
        {
            // Both taken before looking, so a commit between the claim and the wait, or a slot freed after the look at the
            // room, still wakes the loop.
            var wake = _backend.NextWakeUp();
            while (_slotFreed.Reader.TryRead(out _))
            {
            }

            var free = _capacity - Volatile.Read(ref _held);
            if (free <= 0 || (free < _refill && _buffer.Reader.Count > 0))
            {
                await Task.WhenAny(_slotFreed.Reader.WaitToReadAsync(CancellationToken.None).AsTask(), stopped.Task).ConfigureAwait(false);
                continue;
            }

            var asked = Math.Min(free, _settings.MaxClaim);
            LeasedClaim<TMessage> claimed;
            try
            {
                claimed = await _backend.ClaimAsync(asked, stop).ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (stop.IsCancellationRequested)
            {
                return;
            }
            catch (Exception ex)
            {
                var pause = claimRetry > poll ? claimRetry : poll;
                Log.LeasedQueueClaimFailed(_settings.Logger, ex, _settings.Name, pause);
                await SleepAsync(null, pause, stopped.Task).ConfigureAwait(false);
                claimRetry = TimeSpan.FromTicks(Math.Min(claimRetry.Ticks * 2, MaxClaimRetryDelay.Ticks));
                continue;
            }

            claimRetry = FirstClaimRetryDelay;

            var count = claimed.Messages.Count;
            if (count > 0)
            {
                Interlocked.Add(ref _held, count);
                var leaseUntil = claimed.LeaseUntil.UtcTicks;
                foreach (var message in claimed.Messages)
                {
                    var claim = new Claimed(message, leaseUntil, CancellationTokenSource.CreateLinkedTokenSource(_aborting.Token));
                    _leases[message] = claim;

                    // Never full: at most _capacity messages are held, buffered or running.
                    _buffer.Writer.TryWrite(claim);
                }
            }

            if (count >= asked)
            {
                continue;
            }

            var sleep = poll;
            if (claimed.NextVisibleAt is { } next)
            {
                var due = next - _settings.TimeProvider.GetUtcNow();
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
        var elapsed = Task.Delay(sleep, _settings.TimeProvider, timer.Token);
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
                    using var lease = claimed.Lease;
                    var now = _settings.TimeProvider.GetUtcNow().UtcTicks;
                    if (lease.IsCancellationRequested
                        || !_leases.TryGetValue(claimed.Message, out var held)
                        || held != claimed
                        || GiveUpIfLapsed(claimed, now))
                    {
                        // Its claim was lost while it waited here, or its lease ran out (renewals failing) before a renewal
                        // gave it up: another consumer may hold it, so it is neither started nor handed back. Looked up as
                        // well as the token, which the renewal cancels only after it removed the claim (on the pool, so not at
                        // once); and its lease looked at, as a renewal under way (held in the engine, or giving up the claims
                        // before it) gets to it only later, and it was started meanwhile, beside the next consumer's run.
                        Log.LeasedQueueMessageNotStarted(_settings.Logger, claimed.Message.Envelope.MessageId, _settings.Name);
                        FreeSlot();
                    }
                    else if (!_settings.StartsOnlyUnderASafeLease || LeaseIsSafe(claimed, now))
                    {
                        try
                        {
                            await HandleAsync(claimed.Message, lease.Token).ConfigureAwait(false);
                        }
                        finally
                        {
                            _leases.TryRemove(claimed.Message, out _);
                        }
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
    /// True while at least a third of the lease is left at <paramref name="now"/> (UTC ticks) as far as this consumer knows (its claim, or the last renewal of it
    /// that landed), that is while no renewal is overdue: once one is, the lease may have run out and another consumer may
    /// hold the message.
    /// </summary>
    private bool LeaseIsSafe(Claimed claimed, long now) => claimed.LeaseUntil - now >= _safeLeaseTicks;

    /// <summary>Frees the slot of a message not started and hands it back if this consumer still holds it.</summary>
    private async ValueTask HandBackAsync(TMessage message)
    {
        var claim = TakeForSettling(message);
        if (claim is not null && !_settings.RenewsUntilSettled)
        {
            await SettlingAsync(claim).ConfigureAwait(false);
        }

        Log.LeasedQueueMessageNotStarted(_settings.Logger, message.Envelope.MessageId, _settings.Name);
        try
        {
            // Not left to run out, so it comes back at once rather than a lease later.
            await _backend.ReleaseAsync(message, CancellationToken.None).ConfigureAwait(false);
        }
#pragma warning disable CA1031 // Logged; the lease brings the message back once this consumer stops renewing.
        catch (Exception ex)
#pragma warning restore CA1031
        {
            Log.LeasedQueueHandBackFailed(_settings.Logger, ex, message.Envelope.MessageId, _settings.Name);
        }
        finally
        {
            Settled(message, claim);
            FreeSlot();
        }
    }

    private async ValueTask HandleAsync(TMessage message, CancellationToken lease)
    {
        var delivery = new LeasedDelivery<TMessage>(message, Queue, this);
        // The handler's token fires when the consumer aborts, and when a renewal finds this message's claim lost.
        if (!await DeliverySettlement.RunAsync(_handler, delivery, _settings.Logger, _aborting.Token, lease).ConfigureAwait(false))
        {
            // Aborted by shutdown: not a failed attempt. It stays leased to this consumer until StopAsync hands back
            // everything it still holds, unchanged.
            Interlocked.Decrement(ref _held);
        }
    }

    /// <summary>
    /// The renewal thread: renews every third of the lease while anything is held, and a failed renewal again after a
    /// twelfth, so a renewal that lost a race for a lock has several more chances before the lease runs out. Its own thread,
    /// blocking on the backend, so handlers that hold or flood the thread pool cannot delay it.
    /// </summary>
    private void RenewLoop()
    {
        var clock = _settings.TimeProvider;
        var period = _settings.LeaseDuration / 3;
        var retry = _settings.LeaseDuration / 12;
        var due = clock.GetUtcNow() + period;
        var held = new List<TMessage>();
        var claims = new List<Claimed>();
        var lost = new List<TMessage>();
        try
        {
            while (!_renewalEnding)
            {
                var wait = due - clock.GetUtcNow();
                if (wait > TimeSpan.Zero)
                {
                    // Woken by the system clock, the timer of another clock, or stopping; whichever comes first.
                    _renewalDue.Wait(wait < period ? wait : period);
                    _renewalDue.Reset();
                    continue;
                }

                due = clock.GetUtcNow() + (Renew(held, claims, lost) ? period : retry);
            }
        }
        finally
        {
            _renewalStopped.TrySetResult();
        }
    }

    /// <summary>
    /// Renews the claims this consumer holds (only those: a message whose settlement or hand-back failed is no longer held,
    /// and comes back when its lease runs out) and cancels the handlers whose claim was lost; false when the renewal failed.
    /// </summary>
    private bool Renew(List<TMessage> held, List<Claimed> claims, List<TMessage> lost)
    {
        if (Volatile.Read(ref _held) <= 0)
        {
            return true;
        }

        held.Clear();
        claims.Clear();
        lost.Clear();
        var landed = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        foreach (var lease in _leases)
        {
            // A claim being settled or handed back is left out: the renewal must not land after its settlement.
            if (lease.Value.TryRenew(landed.Task))
            {
                held.Add(lease.Key);
                claims.Add(lease.Value);
            }
        }

        if (held.Count == 0)
        {
            return true;
        }

        try
        {
            if (RenewClaims(held, claims, lost))
            {
                return true;
            }

            DropLapsed(claims);
            return false;
        }
        finally
        {
            // Whatever happened, so a settlement waiting for this renewal never waits for ever.
            Landed(claims, landed);
        }
    }

    /// <summary>Renews the claims the renewal took and cancels the handlers whose claim was lost; false when it failed.</summary>
    private bool RenewClaims(List<TMessage> held, List<Claimed> claims, List<TMessage> lost)
    {
        long leaseUntil;
        try
        {
            var renewal = _backend.RenewAsync(held, lost, CancellationToken.None);
            leaseUntil = (renewal.IsCompletedSuccessfully ? renewal.Result : renewal.AsTask().GetAwaiter().GetResult()).UtcTicks;
        }
#pragma warning disable CA1031 // Runs on its own thread with nobody to report to: logged, and tried again soon.
        catch (Exception ex)
#pragma warning restore CA1031
        {
            if (!_renewalEnding)
            {
                Log.LeasedQueueRenewalFailed(_settings.Logger, ex, _settings.Name);
            }

            return false;
        }

        foreach (var message in lost)
        {
            // Not found when it was settled or handed back since the renewal looked, and left alone while it is being settled
            // (its settlement, guarded by the same claim, finds out whether it was lost): then it is not lost here. Removed
            // before anything else, so a worker that reads it from the buffer from now on does not start it.
            if (_leases.TryGetValue(message, out var claim) && TryGiveUp(claim))
            {
                Log.LeasedQueueClaimLost(_settings.Logger, message.Envelope.MessageId, _settings.Name);
                GiveUp(claim);
            }
        }

        // Known only once it landed, and only for the claims this renewal extended: not for a lost one, nor for one claimed
        // after the renewal looked.
        var renewed = lost.Count == 0 ? null : new HashSet<TMessage>(lost);
        foreach (var claim in claims)
        {
            if (renewed is null || !renewed.Contains(claim.Message))
            {
                claim.Renewed(leaseUntil);
            }
        }

        return true;
    }

    /// <summary>
    /// After a failed renewal: gives up the claims whose lease has run out as far as this consumer knows. Another consumer
    /// may claim such a message from now on, so its handler is cancelled (its settlement then applies only if nobody did),
    /// and a worker that reads it from the buffer does not start it; kept, it ran beside the other consumer's run for as
    /// long as the renewals kept failing.
    /// </summary>
    private void DropLapsed(List<Claimed> claims)
    {
        var now = _settings.TimeProvider.GetUtcNow().UtcTicks;
        foreach (var claim in claims)
        {
            GiveUpIfLapsed(claim, now);
        }
    }

    /// <summary>
    /// True when the claim's lease has run out as far as this consumer knows (<paramref name="now"/>, UTC ticks); then it is
    /// given up, unless it was settled, handed back or found lost meanwhile, or is being settled (that verdict is its
    /// settlement's).
    /// </summary>
    private bool GiveUpIfLapsed(Claimed claim, long now)
    {
        if (claim.LeaseUntil > now)
        {
            return false;
        }

        if (TryGiveUp(claim))
        {
            Log.LeasedQueueLeaseRanOut(_settings.Logger, claim.Message.Envelope.MessageId, _settings.Name);
            GiveUp(claim);
        }

        return true;
    }

    /// <summary>Takes a claim out of the renewals as lost, unless it is being settled or was taken out already.</summary>
    private bool TryGiveUp(Claimed claim) =>
        claim.TryGiveUp() && _leases.TryRemove(new KeyValuePair<TMessage, Claimed>(claim.Message, claim));

    /// <summary>Counts a claim this consumer no longer holds and cancels its handler's token.</summary>
    private void GiveUp(Claimed claim)
    {
        HeraldDiagnostics.LeasesLost.Add(1, new KeyValuePair<string, object?>(MetricNames.LeaseKindTag, "queue"));

        // On the pool, not here: cancelling runs the handler's continuations inline, and this thread must only renew.
        ThreadPool.UnsafeQueueUserWorkItem(static state => state.Consumer.Cancel(state.Lease), (Consumer: this, Lease: claim.Lease), preferLocal: false);
    }

    /// <summary>Lets the settlements that waited for this renewal go on.</summary>
    private static void Landed(List<Claimed> claims, TaskCompletionSource landed)
    {
        foreach (var claim in claims)
        {
            claim.RenewalLanded();
        }

        landed.TrySetResult();
    }

    private void Cancel(CancellationTokenSource lease)
    {
        try
        {
            lease.Cancel();
        }
        catch (ObjectDisposedException)
        {
            // Its handler ended meanwhile.
        }
#pragma warning disable CA1031 // A handler's cancellation callback failed: the handler's business, not the renewal's.
        catch (AggregateException ex)
#pragma warning restore CA1031
        {
            Log.LeasedQueueRenewalFailed(_settings.Logger, ex, _settings.Name);
        }
    }

    private async Task FinishAsync()
    {
        if (_renewal is { } renewal)
        {
            await renewal.DisposeAsync().ConfigureAwait(false);
            _renewalEnding = true;
            _renewalDue.Set();
            await _renewalStopped.Task.ConfigureAwait(false);
        }

        Task? settled;
        lock (_gate)
        {
            settled = _settled?.Task;
        }

        if (settled is not null)
        {
            // Bounded by a lease: a settlement still going after that has retried as long as its lease allowed, and a message
            // whose lease ran out is not handed back.
            await settled.WaitAsync(_settings.LeaseDuration, _settings.TimeProvider).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
        }

        while (_buffer.Reader.TryRead(out var claimed))
        {
            // Prefetched, never started: handed back below with everything else this consumer still holds.
            claimed.Lease.Dispose();
        }

        _leases.Clear();

        try
        {
            await _backend.ReleaseAllAsync(CancellationToken.None).ConfigureAwait(false);
        }
#pragma warning disable CA1031 // Stopping must finish; the leases run out and the messages come back anyway.
        catch (Exception ex)
#pragma warning restore CA1031
        {
            Log.LeasedQueueReleaseFailed(_settings.Logger, ex, _settings.Name);
        }

        Log.LeasedQueueConsumerStopped(_settings.Logger, _settings.Name);
    }

    /// <summary>A claimed message, when its lease runs out as far as this consumer knows (UTC ticks), and the source of its handler's token.</summary>
    private sealed class Claimed(TMessage message, long leaseUntil, CancellationTokenSource lease)
    {
        private const int Held = 0;
        private const int Renewing = 1;
        private const int Settling = 2;

        private const int Holding = 0;
        private const int Ending = 1;
        private const int GivenUp = 2;

        private long _leaseUntil = leaseUntil;
        private int _state;
        private int _end;
        private Task? _renewal;

        public TMessage Message { get; } = message;

        public CancellationTokenSource Lease { get; } = lease;

        public long LeaseUntil => Interlocked.Read(ref _leaseUntil);

        /// <summary>Called by the renewal thread only; a renewal never shortens a lease.</summary>
        public void Renewed(long leaseUntil)
        {
            if (leaseUntil > LeaseUntil)
            {
                Interlocked.Exchange(ref _leaseUntil, leaseUntil);
            }
        }

        /// <summary>True when the renewal (completing once it landed) may include it: it is not being settled.</summary>
        public bool TryRenew(Task renewal)
        {
            // Written before the state, so a settlement that sees the renewal in flight waits for this one.
            Volatile.Write(ref _renewal, renewal);
            return Interlocked.CompareExchange(ref _state, Renewing, Held) != Settling;
        }

        public void RenewalLanded() => Interlocked.CompareExchange(ref _state, Held, Renewing);

        /// <summary>
        /// True for the one caller that settles or hands it back from now on: a renewal did not give it up first, and no other
        /// settlement took it (as taking it out of the renewals made one caller its owner where they are left in).
        /// </summary>
        public bool TryBeginSettling() => Interlocked.CompareExchange(ref _end, Ending, Holding) == Holding;

        /// <summary>True when a renewal gives it up as lost: it is not being settled or handed back.</summary>
        public bool TryGiveUp() => Interlocked.CompareExchange(ref _end, GivenUp, Holding) != Ending;

        /// <summary>Takes it out of the renewals from now on; or, while a renewal that includes it is in flight, returns that renewal.</summary>
        public Task? TrySettle() =>
            Interlocked.CompareExchange(ref _state, Settling, Held) == Renewing ? Volatile.Read(ref _renewal) : null;
    }
}
