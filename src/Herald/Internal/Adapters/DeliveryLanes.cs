using System.Diagnostics;
using System.Threading.Tasks.Sources;

namespace Herald.Internal;

/// <summary>
/// Hands a consumer's deliveries to its workers. An item with a key (a partition key, a subject) goes to the lane of
/// one worker, always the same for that key, so it is handled in order; an item without one goes to a queue every
/// worker takes from, as a bare client's workers share one channel, so a worker that is not running (a handler that is
/// slow, a thread the machine has not scheduled) holds up no other. A worker takes its own lane first. An idle worker is
/// woken for a new item, the one that went idle last first (fast handlers finish in delivery order on one warm worker).
/// Optionally the writer runs such an item itself, in the idle worker's turn, as far as the handler's first wait: a fast
/// handler then costs no hand-over to another thread, as with a bare client that handles on its dispatch thread.
/// </summary>
/// <remarks>An extension point for Herald's adapter packages, not for application code; it may change in any release.</remarks>
public sealed class DeliveryLanes<T>
{
    // How many items per worker are queued after an inline run held the writer too long, and how long is too long by
    // default (see RunInline).
    private const int InlineSkip = 256;
    private static readonly TimeSpan DefaultInlineLimit = TimeSpan.FromMicroseconds(50);

    // How much evidence it takes that inline runs hold the writer: a run over the limit adds 2, a run within it takes 1
    // off (down to 0), and at this the next items are queued. A handler that computes past the limit every time (or every
    // other time) is queued after two runs; a run that only looked long because the writer's thread lost its core for a
    // while (frequent on 2 cores a broker shares: 9 ms once) is rare, and the runs within the limit after it take it off.
    private const int OverLimitEvidence = 4;

    // One lock over every queue: the writer and the workers hold it for a few instructions (a bounded channel takes one
    // too), and it lets the writer see at once which worker is idle without reading counts under other locks.
    private readonly Lock _gate = new();
    private readonly Queue<T>[] _lanes;
    private readonly Queue<T> _shared = new();
    private readonly Signal[] _wake;

    // Workers waiting for an item, the one that went idle last on top; _waiting[i] says whether worker i is among them.
    private readonly int[] _idle;
    private readonly bool[] _waiting;
    private readonly Signal _writerWake = new();
    private readonly int _capacity;
    private readonly bool _inline;
    private readonly TimeSpan _inlineLimit;
    private Func<T, ValueTask>? _handle;
    private int _idleCount;

    // Items still to be queued rather than run inline, after inline runs held the writer longer than the inline limit.
    private int _inlineSkip;

    // The evidence that inline runs hold the writer (see OverLimitEvidence); only the writer touches it.
    private int _overLimit;
    private int _count;

    // Workers that have not ended: once stopping, those still finishing an item.
    private int _workersLeft;
    private bool _writerWaiting;
    private bool _closed;

    /// <summary>Creates <paramref name="concurrency"/> lanes sharing <paramref name="prefetch"/> slots; one writer feeds them.</summary>
    public DeliveryLanes(int concurrency, int prefetch)
        : this(concurrency, prefetch, runInline: false)
    {
    }

    /// <summary>
    /// As <see cref="DeliveryLanes{T}(int, int)"/>; with <paramref name="runInline"/>, an item whose worker is idle and
    /// that nothing waits ahead of runs at once on the writer's thread, in that worker's turn (so no more than
    /// <paramref name="concurrency"/> run at once, and items of one key still run one at a time in order), until the
    /// handler first waits; <see cref="WriteAsync"/> then returns while the handler goes on. Once handlers kept the writer
    /// for more than 50 µs without waiting in two runs in a row (or in more than every third run for a while), the next
    /// 256 items per worker are queued for the workers instead, so handlers that compute for long still run side by side;
    /// one long run alone, as when the writer's thread was preempted, does not stop the inline runs. For a writer that
    /// owns its thread (a client's dispatch loop).
    /// </summary>
    public DeliveryLanes(int concurrency, int prefetch, bool runInline)
        : this(concurrency, prefetch, runInline, DefaultInlineLimit)
    {
    }

    // inlineLimit: how long an inline run may hold the writer before the next items are queued (tests set it).
    internal DeliveryLanes(int concurrency, int prefetch, bool runInline, TimeSpan inlineLimit)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(concurrency, 1);
        _capacity = concurrency * Math.Max(1, prefetch / concurrency);
        _lanes = new Queue<T>[concurrency];
        _wake = new Signal[concurrency];
        _idle = new int[concurrency];
        _waiting = new bool[concurrency];
        _inline = runInline;
        _inlineLimit = inlineLimit;
        for (var i = 0; i < concurrency; i++)
        {
            _lanes[i] = new Queue<T>();
            _wake[i] = new Signal();
        }
    }

    /// <summary>
    /// Puts an item in its lane (or the shared queue when <paramref name="key"/> is null), waiting while every slot is
    /// taken, or runs it inline (see <see cref="DeliveryLanes{T}(int, int, bool)"/>). Once the workers were told to stop,
    /// throws <see cref="OperationCanceledException"/>: the item was not taken.
    /// </summary>
    public ValueTask WriteAsync(T item, string? key, CancellationToken cancellationToken)
    {
        Signal? wake = null;
        var lent = -1;
        bool full;
        lock (_gate)
        {
            if (_closed)
            {
                return ValueTask.FromException(Stopping(cancellationToken));
            }

            full = _count >= _capacity;
            if (full)
            {
                ArmWriter();
            }
            else if ((lent = Lend(key)) < 0)
            {
                wake = Enqueue(item, key);
            }
        }

        if (lent >= 0)
        {
            RunInline(item, lent);
            return ValueTask.CompletedTask;
        }

        if (full)
        {
            return WriteSlowAsync(item, key, cancellationToken);
        }

        wake?.Set();
        return ValueTask.CompletedTask;
    }

    /// <summary>
    /// Runs one worker per lane until <paramref name="stopping"/> fires: each takes items one at a time (its own lane's
    /// first) and awaits <paramref name="handle"/>. A worker finishes the item it runs; items still queued stay for
    /// <see cref="TakeLeftovers"/>.
    /// </summary>
    public Task RunAsync(Func<T, ValueTask> handle, CancellationToken stopping)
    {
        ArgumentNullException.ThrowIfNull(handle);
        _handle = handle;

        // Workers wait without a token (a wait with one allocates and registers on the token every time a worker runs dry,
        // once per message when handlers are fast); stopping wakes them instead. Items still queued stay for TakeLeftovers.
        _ = stopping.UnsafeRegister(static s => ((DeliveryLanes<T>)s!).Close(), this);
        _workersLeft = _lanes.Length;
        return Task.WhenAll(Enumerable.Range(0, _lanes.Length).Select(lane => Task.Run(() => WorkAsync(lane, handle, stopping), CancellationToken.None)));
    }

    /// <summary>How many workers have not ended; once stopping fired, those still running an item (a handler a stop abandons).</summary>
    public int WorkersLeft => Volatile.Read(ref _workersLeft);

    /// <summary>Takes every item no worker started (after the workers stopped), for the consumer to hand back.</summary>
    public List<T> TakeLeftovers()
    {
        var left = new List<T>();
        lock (_gate)
        {
            foreach (var lane in _lanes)
            {
                left.AddRange(lane);
                lane.Clear();
            }

            left.AddRange(_shared);
            _shared.Clear();
            _count = 0;
        }

        return left;
    }

    // Under the gate: queues the item and returns the signal of an idle worker that may take it, if there is one.
    private Signal? Enqueue(T item, string? key)
    {
        _count++;

        // A single worker takes every item, keyed or not, in the order written, from one queue.
        if (key is null || _lanes.Length == 1)
        {
            _shared.Enqueue(item);
            return _idleCount > 0 ? TakeIdle(_idle[_idleCount - 1]) : null;
        }

        var lane = (int)(StableHash(key) % (uint)_lanes.Length);
        _lanes[lane].Enqueue(item);
        return _waiting[lane] ? TakeIdle(lane) : null;
    }

    // Under the gate, for an inline run: the idle worker that would take an item of this key next, taken off the idle stack
    // without waking it (it stays parked on its signal, and is given back after the run), when nothing waits ahead of the
    // item; -1 when the item is to be queued.
    private int Lend(string? key)
    {
        if (!_inline || _idleCount == 0 || _handle is null)
        {
            return -1;
        }

        if (_inlineSkip > 0)
        {
            _inlineSkip--;
            return -1;
        }

        int worker;
        if (key is null || _lanes.Length == 1)
        {
            if (_shared.Count > 0)
            {
                return -1;
            }

            worker = _idle[_idleCount - 1];
        }
        else
        {
            worker = (int)(StableHash(key) % (uint)_lanes.Length);
            if (!_waiting[worker])
            {
                return -1;
            }
        }

        _ = TakeIdle(worker);
        return worker;
    }

    // Runs the item in the lent worker's turn, up to the handler's first wait; the rest runs on wherever that wait resumes,
    // and the writer goes on. A handler that held the writer longer than the inline limit before returning (work of its own,
    // not a wait) would hold up every item behind it while other workers idle: once that is seen twice running (see
    // OverLimitEvidence), the next items are queued instead.
    private void RunInline(T item, int worker)
    {
        var started = Stopwatch.GetTimestamp();
        ValueTask handled;
        try
        {
            handled = _handle!(item);
        }
        catch
        {
            GiveBack(worker);
            throw;
        }

        if (Stopwatch.GetElapsedTime(started) > _inlineLimit)
        {
            _overLimit += 2;
            if (_overLimit >= OverLimitEvidence)
            {
                _overLimit = 0;
                lock (_gate)
                {
                    _inlineSkip = InlineSkip * _lanes.Length;
                }
            }
        }
        else if (_overLimit > 0)
        {
            _overLimit--;
        }

        if (!handled.IsCompleted)
        {
            _ = FinishAsync(handled, worker);
            return;
        }

        try
        {
            handled.GetAwaiter().GetResult();
        }
        finally
        {
            GiveBack(worker);
        }
    }

    private async Task FinishAsync(ValueTask handled, int worker)
    {
        try
        {
            await handled.ConfigureAwait(false);
        }
        finally
        {
            GiveBack(worker);
        }
    }

    // A lent worker goes back on top of the idle stack, still parked, or is woken when items came for it meanwhile or the
    // lanes were closed (it then ends as an idle one does).
    private void GiveBack(int worker)
    {
        lock (_gate)
        {
            if (!_closed && _lanes[worker].Count == 0 && _shared.Count == 0)
            {
                _waiting[worker] = true;
                _idle[_idleCount++] = worker;
                return;
            }
        }

        _wake[worker].Set();
    }

    // Under the gate: the worker leaves the idle stack; the caller sets its signal once out of the gate.
    private Signal TakeIdle(int worker)
    {
        _waiting[worker] = false;
        var at = Array.LastIndexOf(_idle, worker, _idleCount - 1, _idleCount);
        Array.Copy(_idle, at + 1, _idle, at, _idleCount - at - 1);
        _idleCount--;
        return _wake[worker];
    }

    // Under the gate: the (only) writer is about to wait for a slot.
    private void ArmWriter()
    {
        _writerWake.Reset();
        _writerWaiting = true;
    }

    private async ValueTask WriteSlowAsync(T item, string? key, CancellationToken cancellationToken)
    {
        using var registration = cancellationToken.UnsafeRegister(static s => ((DeliveryLanes<T>)s!).WakeWriter(), this);
        while (true)
        {
            await _writerWake.WaitAsync().ConfigureAwait(false);
            Signal? wake;
            lock (_gate)
            {
                if (_closed)
                {
                    throw Stopping(cancellationToken);
                }

                if (cancellationToken.IsCancellationRequested)
                {
                    throw new OperationCanceledException(cancellationToken);
                }

                if (_count >= _capacity)
                {
                    ArmWriter();
                    continue;
                }

                wake = Enqueue(item, key);
            }

            wake?.Set();
            return;
        }
    }

    private void WakeWriter()
    {
        lock (_gate)
        {
            if (!_writerWaiting)
            {
                return;
            }

            _writerWaiting = false;
        }

        _writerWake.Set();
    }

    private void Close()
    {
        List<Signal> wake = [];
        lock (_gate)
        {
            _closed = true;
            while (_idleCount > 0)
            {
                wake.Add(TakeIdle(_idle[_idleCount - 1]));
            }

            if (_writerWaiting)
            {
                _writerWaiting = false;
                wake.Add(_writerWake);
            }
        }

        foreach (var signal in wake)
        {
            signal.Set();
        }
    }

    private async Task WorkAsync(int lane, Func<T, ValueTask> handle, CancellationToken stopping)
    {
        var own = _lanes[lane];
        var wake = _wake[lane];
        try
        {
            while (true)
            {
                T item;
                bool taken;
                var wakeWriter = false;
                lock (_gate)
                {
                    if (_closed || stopping.IsCancellationRequested)
                    {
                        return;
                    }

                    taken = own.TryDequeue(out item!) || _shared.TryDequeue(out item!);
                    if (taken)
                    {
                        _count--;
                        wakeWriter = _writerWaiting;
                        _writerWaiting = false;
                    }
                    else
                    {
                        wake.Reset();
                        _waiting[lane] = true;
                        _idle[_idleCount++] = lane;
                    }
                }

                if (!taken)
                {
                    await wake.WaitAsync().ConfigureAwait(false);
                    continue;
                }

                if (wakeWriter)
                {
                    _writerWake.Set();
                }

                await handle(item).ConfigureAwait(false);
            }
        }
        catch (OperationCanceledException) when (stopping.IsCancellationRequested)
        {
        }
        finally
        {
            Interlocked.Decrement(ref _workersLeft);
        }
    }

    private static OperationCanceledException Stopping(CancellationToken cancellationToken) =>
        new("The consumer is stopping.", cancellationToken);

    // FNV-1a over the key's UTF-16 units: the same key takes the same lane in every process and run (string.GetHashCode
    // is randomized per process), so which keys share a lane is reproducible.
    private static uint StableHash(string key)
    {
        var hash = 2166136261u;
        foreach (var c in key)
        {
            hash = (hash ^ c) * 16777619u;
        }

        return hash;
    }

    /// <summary>
    /// A reusable wake-up with one waiter at a time. Setting it queues the waiter's continuation to the pool's global queue
    /// (as a channel does), so it never runs on the waker's thread and the waker goes on at once.
    /// </summary>
    private sealed class Signal : IValueTaskSource, IThreadPoolWorkItem
    {
        private ManualResetValueTaskSourceCore<bool> _core;

        public void Reset() => _core.Reset();

        public void Set() => ThreadPool.UnsafeQueueUserWorkItem(this, preferLocal: false);

        public ValueTask WaitAsync() => new(this, _core.Version);

        void IThreadPoolWorkItem.Execute() => _core.SetResult(true);

        public void GetResult(short token) => _core.GetResult(token);

        public ValueTaskSourceStatus GetStatus(short token) => _core.GetStatus(token);

        public void OnCompleted(Action<object?> continuation, object? state, short token, ValueTaskSourceOnCompletedFlags flags) =>
            _core.OnCompleted(continuation, state, token, flags);
    }
}
