using System.Collections.Concurrent;
using System.Runtime.CompilerServices;
using Herald.Internal;
using Herald.Messages;

namespace Herald.Transport.InMemory;

/// <summary>
/// One queue. Memory is bounded by a permit per message held (ready, delayed or in flight): a sender waits for a
/// permit, and a permit is returned only when the message is acked or dead-lettered. Redeliveries reuse their permit,
/// so a consumer never blocks on its own nack.
/// </summary>
internal sealed class InMemoryQueue
{
    /// <summary>The longest wait of one system timer (uint.MaxValue - 1 milliseconds, about 49.7 days).</summary>
    private static readonly TimeSpan MaxTimerStep = TimeSpan.FromMilliseconds(uint.MaxValue - 1);

    private readonly SemaphoreSlim _permits;
    private readonly ReadyQueue _ready = new();
    // A list, not a queue: a drain removes the one it moved, which need not be the oldest when an older one was refused.
    private readonly LinkedList<InMemoryDeadLetter> _deadLetters = new();
    private readonly ConcurrentDictionary<ITimer, byte> _timers = new();
    private readonly SemaphoreSlim _draining = new(1, 1);
    private readonly InMemoryTransport _transport;
    private readonly int _deadLetterCapacity;
    private int _deadLetterCount;

    public InMemoryQueue(string name, InMemoryTransport transport, InMemoryTransportOptions options)
    {
        Name = name;
        _transport = transport;
        _permits = new SemaphoreSlim(options.QueueCapacity, options.QueueCapacity);
        _deadLetterCapacity = options.DeadLetterCapacity;
    }

    public string Name { get; }

    public ReadyQueue Reader => _ready;

    public int ReadyCount => _ready.Count;

    public IReadOnlyList<InMemoryDeadLetter> DeadLetters
    {
        get
        {
            lock (_deadLetters)
            {
                return [.. _deadLetters];
            }
        }
    }

    public ValueTask EnqueueAsync(Envelope envelope, TimeSpan? delay, CancellationToken cancellationToken)
    {
        if (cancellationToken.IsCancellationRequested)
        {
            return ValueTask.FromCanceled(cancellationToken);
        }

        // A permit free at once (the usual case) costs no task; only a full queue makes the sender wait.
        if (!_permits.Wait(0, CancellationToken.None))
        {
            return EnqueueWhenRoomAsync(envelope, delay, cancellationToken);
        }

        Schedule(envelope.DeliveryAttempt == 1 ? envelope : envelope with { DeliveryAttempt = 1 }, delay);
        return ValueTask.CompletedTask;
    }

    // Pooled: under load a sender waits here for most messages.
    [AsyncMethodBuilder(typeof(PoolingAsyncValueTaskMethodBuilder))]
    private async ValueTask EnqueueWhenRoomAsync(Envelope envelope, TimeSpan? delay, CancellationToken cancellationToken)
    {
        await _permits.WaitAsync(cancellationToken).ConfigureAwait(false);
        Schedule(envelope.DeliveryAttempt == 1 ? envelope : envelope with { DeliveryAttempt = 1 }, delay);
    }

    /// <summary>Puts a delivered message back for another delivery (its permit is still held).</summary>
    public void Redeliver(Envelope envelope, TimeSpan delay) =>
        Schedule(envelope with { DeliveryAttempt = envelope.DeliveryAttempt + 1 }, delay);

    /// <summary>
    /// Puts messages a consumer took but did not settle (prefetched, or cancelled by its stop) back as they were (not
    /// counted as a delivery), at the head of the queue in the order the queue gave them out (by position, whichever consumer
    /// read them), where a broker's requeue puts them.
    /// </summary>
    public void Return(ReadOnlySpan<QueuedEnvelope> envelopes) => _ready.AddToFront(envelopes);

    public void Complete() => _permits.Release();

    public TimeProvider TimeProvider => _transport.TimeProvider;

    public void DeadLetter(Envelope envelope, string reason)
    {
        if (Interlocked.Increment(ref _deadLetterCount) > _deadLetterCapacity)
        {
            Interlocked.Decrement(ref _deadLetterCount);

            // The delivery already counts as settled, so nothing else would put the message back: keep it (and its permit).
            Redeliver(envelope, TimeSpan.Zero);
            throw new InvalidOperationException(
                $"The in-memory dead letters of queue '{Name}' are full ({_deadLetterCapacity}); the message stays in the queue.");
        }

        lock (_deadLetters)
        {
            _deadLetters.AddLast(new InMemoryDeadLetter(envelope, Name, reason, _transport.TimeProvider.GetUtcNow()));
        }

        _permits.Release();
    }

    /// <summary>
    /// Moves the dead letters there when it began out one at a time, each removed only after <paramref name="moveAsync"/>
    /// returned; one it throws on stays, and the others are still moved (see <see cref="INativeDeadLetterSource"/>).
    /// </summary>
    public async ValueTask<int> DrainDeadLettersAsync(Func<NativeDeadLetter, CancellationToken, ValueTask> moveAsync, CancellationToken cancellationToken)
    {
        // One drain at a time, so a dead letter is moved once.
        await _draining.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            LinkedListNode<InMemoryDeadLetter>[] nodes;
            lock (_deadLetters)
            {
                nodes = new LinkedListNode<InMemoryDeadLetter>[_deadLetters.Count];
                var i = 0;
                for (var node = _deadLetters.First; node is not null; node = node.Next)
                {
                    nodes[i++] = node;
                }
            }

            var moved = 0;
            var round = new DeadLetterDrainRound();
            foreach (var node in nodes)
            {
                cancellationToken.ThrowIfCancellationRequested();
                var letter = node.Value;
                var native = new NativeDeadLetter { Envelope = letter.Envelope, Queue = Name, Reason = letter.Reason, Time = letter.Time };
                if (await round.TryMoveAsync(moveAsync, native, cancellationToken).ConfigureAwait(false) && TryRemove(node))
                {
                    moved++;
                }
            }

            round.ThrowIfAnyFailed();
            return moved;
        }
        finally
        {
            _draining.Release();
        }
    }

    public bool TryTakeDeadLetter(out InMemoryDeadLetter? deadLetter)
    {
        lock (_deadLetters)
        {
            deadLetter = _deadLetters.First?.Value;
            return _deadLetters.First is { } first && TryRemove(first);
        }
    }

    // False when a take removed it meanwhile.
    private bool TryRemove(LinkedListNode<InMemoryDeadLetter> node)
    {
        lock (_deadLetters)
        {
            if (node.List is null)
            {
                return false;
            }

            _deadLetters.Remove(node);
            Interlocked.Decrement(ref _deadLetterCount);
            return true;
        }
    }

    public void DisposeTimers()
    {
        foreach (var timer in _timers.Keys)
        {
            timer.Dispose();
        }

        _timers.Clear();
    }

    private void Schedule(Envelope envelope, TimeSpan? delay)
    {
        if (delay is not { } due || due <= TimeSpan.Zero)
        {
            _ready.Add(envelope);
            return;
        }

        // The timer removes itself once it fired; until then it holds the message (and its permit). The system clock's timers
        // wait at most about 49.7 days (longer throws): a longer delay waits in steps, each due at the message's due time at
        // the latest.
        var clock = _transport.TimeProvider;
        var now = clock.GetUtcNow();
        var dueAt = due < DateTimeOffset.MaxValue - now ? now + due : DateTimeOffset.MaxValue;
        var stepped = due > MaxTimerStep;
        var state = new DelayedMessage(this, envelope, dueAt, stepped);
        var timer = clock.CreateTimer(static s => ((DelayedMessage)s!).Fire(), state, stepped ? MaxTimerStep : due, Timeout.InfiniteTimeSpan);
        state.Timer = timer;
        _timers[timer] = 0;
        if (state.Fired)
        {
            _timers.TryRemove(timer, out _);
        }
    }

    private sealed class DelayedMessage(InMemoryQueue queue, Envelope envelope, DateTimeOffset dueAt, bool stepped)
    {
        private int _fired;

        public ITimer? Timer { get; set; }

        public bool Fired => Volatile.Read(ref _fired) != 0;

        public void Fire()
        {
            if (Interlocked.Exchange(ref _fired, 1) != 0)
            {
                return;
            }

            if (Timer is { } timer)
            {
                queue._timers.TryRemove(timer, out _);
                timer.Dispose();
            }

            // A step of a delay longer than one timer waits: the rest is scheduled again.
            var left = dueAt - queue._transport.TimeProvider.GetUtcNow();
            if (stepped && left > TimeSpan.Zero)
            {
                queue.Schedule(envelope, left);
                return;
            }

            queue._ready.Add(envelope);
        }
    }
}
