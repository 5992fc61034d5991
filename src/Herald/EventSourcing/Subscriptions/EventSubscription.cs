using Herald.EventSourcing.Upcasting;
using Herald.Hosting;
using Herald.Reliability.DeadLetters;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Herald.EventSourcing.Subscriptions;

/// <summary>
/// A catch-up subscription on the global log: it reads history from its checkpoint in batches, then waits for new events
/// with <see cref="IEventStore.WaitForEventsAsync"/>, handing each event to the handler in position order exactly once
/// past the checkpoint. It works with any <see cref="IEventStore"/>. A handler exception stops it (see <see cref="Completion"/>),
/// as does an event the store's upcasters cannot migrate (an <see cref="EventUpcastingException"/>) or whose row no longer
/// reads (an <see cref="UnreadableEventException"/> naming its position), unless <see cref="EventSubscriptionOptions.DeadLetterUnreadableEventsTo"/>
/// takes such events to the dead letters; a failing store or checkpoint store (a database restarting) does not: the subscription logs it and tries again from
/// its position, waiting 100 ms at first and up to 5 s between tries (issue 10).
/// </summary>
public sealed class EventSubscription : IAsyncDisposable
{
    private static readonly TimeSpan FirstRetryDelay = TimeSpan.FromMilliseconds(100);
    private static readonly TimeSpan MaxRetryDelay = TimeSpan.FromSeconds(5);

    private readonly IEventStore _store;
    private readonly ICheckpointStore _checkpoints;
    private readonly Func<RecordedEvent, CancellationToken, ValueTask> _handler;
    private readonly EventSubscriptionOptions _options;
    private readonly Lock _gate = new();
    private readonly List<(long Position, TaskCompletionSource Signal)> _waiters = [];
    private CancellationTokenSource? _stopping;
    private Task _completion = Task.CompletedTask;
    private long _position;
    private long _savedPosition;
    private Exception? _failure;
    private bool _started;

    /// <summary>Creates a stopped subscription; call <see cref="StartAsync(CancellationToken)"/> to run it.</summary>
    public EventSubscription(IEventStore store, ICheckpointStore checkpoints, Func<RecordedEvent, CancellationToken, ValueTask> handler, EventSubscriptionOptions options)
    {
        ArgumentNullException.ThrowIfNull(store);
        ArgumentNullException.ThrowIfNull(checkpoints);
        ArgumentNullException.ThrowIfNull(handler);
        ArgumentNullException.ThrowIfNull(options);
        ArgumentException.ThrowIfNullOrWhiteSpace(options.SubscriptionId, nameof(options));
        ArgumentOutOfRangeException.ThrowIfLessThan(options.BatchSize, 1, nameof(options));
        ArgumentOutOfRangeException.ThrowIfLessThan(options.CheckpointEvery, 1, nameof(options));
        ArgumentOutOfRangeException.ThrowIfNegative(options.StartAfterPosition, nameof(options));
        CheckpointValidation.Validate(options.SubscriptionId, options.Filter, nameof(options));
        _store = store;
        _checkpoints = checkpoints;
        _handler = handler;
        _options = options;
    }

    /// <summary>
    /// Replaces the plain checkpoint write of the loop (set before start): a projection stores its position only forward,
    /// in a unit of work, so a runner that lost its leadership cannot move the checkpoint back.
    /// </summary>
    internal Func<long, CancellationToken, ValueTask>? SaveCheckpoint { get; init; }

    /// <summary>Where the subscription logs the store failures it retries (none by default). Set before start.</summary>
    public ILogger? Logger { get; init; }

    /// <summary>
    /// Replaces the handler for the events of a read (set before start): it gets them in runs of at most
    /// <see cref="BatchLimit"/>, in position order, and the subscription moves past a run once it returns; true when it
    /// stored the run's last position as the checkpoint itself (so the loop need not).
    /// </summary>
    internal Func<IReadOnlyList<RecordedEvent>, CancellationToken, ValueTask<bool>>? BatchHandler { get; init; }

    /// <summary>The most events one call of <see cref="BatchHandler"/> gets.</summary>
    internal int BatchLimit { get; init; } = 1;

    /// <summary>The endpoint the dead letter of an unreadable event names (the subscription's id by default; a projection's name).</summary>
    internal string? DeadLetterEndpoint { get; init; }

    /// <summary>The kind of consumer the dead letter of an unreadable event names (a subscription by default; a projection).</summary>
    internal DeadLetterOrigin DeadLetterOrigin { get; init; } = DeadLetterOrigin.EventSubscription;

    /// <summary>The host's dead-letter monitor, told of the dead letters of unreadable events (none for a subscription built without a host: they are still counted).</summary>
    internal DeadLetterMonitor? DeadLetterMonitor { get; init; }

    /// <summary>The clock of the dead letters' times.</summary>
    internal TimeProvider TimeProvider { get; init; } = TimeProvider.System;

    /// <summary>The subscription's id (its checkpoint name).</summary>
    public string SubscriptionId => _options.SubscriptionId;

    /// <summary>The global position processed so far: every event at or below it that passes the filter has been handled.</summary>
    public long Position => Volatile.Read(ref _position);

    /// <summary>Completes when the loop ends: successfully after <see cref="StopAsync"/>, faulted when the handler or the store failed.</summary>
    public Task Completion => _completion;

    /// <summary>Creates and starts a subscription in one call.</summary>
    public static async Task<EventSubscription> StartNewAsync(
        IEventStore store,
        ICheckpointStore checkpoints,
        Func<RecordedEvent, CancellationToken, ValueTask> handler,
        EventSubscriptionOptions options,
        CancellationToken cancellationToken = default)
    {
        var subscription = new EventSubscription(store, checkpoints, handler, options);
        await subscription.StartAsync(cancellationToken).ConfigureAwait(false);
        return subscription;
    }

    /// <summary>Loads the checkpoint and starts following the log in the background; returns once running.</summary>
    public async Task StartAsync(CancellationToken cancellationToken = default)
    {
        lock (_gate)
        {
            if (_started)
            {
                throw new InvalidOperationException($"The subscription '{SubscriptionId}' was already started; create a new one to run it again.");
            }

            _started = true;
        }

        var checkpoint = await _checkpoints.GetCheckpointAsync(SubscriptionId, cancellationToken).ConfigureAwait(false);
        var start = checkpoint ?? _options.StartAfterPosition;
        Volatile.Write(ref _position, start);
        _savedPosition = checkpoint ?? -1;
        _stopping = new CancellationTokenSource();
        _completion = Task.Run(() => RunAsync(_stopping.Token), CancellationToken.None);
    }

    /// <summary>Stops following the log after the event in hand and saves the checkpoint. Does not rethrow a handler failure; see <see cref="Completion"/>.</summary>
    public async Task StopAsync(CancellationToken cancellationToken = default)
    {
        if (_stopping is null)
        {
            return;
        }

        await _stopping.CancelAsync().ConfigureAwait(false);
        try
        {
            await _completion.WaitAsync(cancellationToken).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
        }
        catch (Exception) when (_completion.IsFaulted)
        {
            // The failure stays observable through Completion.
        }

        FailWaiters(new OperationCanceledException($"The subscription '{SubscriptionId}' was stopped."));
    }

    /// <summary>
    /// Completes when <see cref="Position"/> reaches <paramref name="position"/>; faults when the subscription fails or stops
    /// first. Tests use it to wait for catch-up without sleeping.
    /// </summary>
    public Task WaitForPositionAsync(long position, CancellationToken cancellationToken = default)
    {
        lock (_gate)
        {
            if (Position >= position)
            {
                return Task.CompletedTask;
            }

            if (_failure is not null)
            {
                return Task.FromException(_failure);
            }

            var signal = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            _waiters.Add((position, signal));
            return signal.Task.WaitAsync(cancellationToken);
        }
    }

    /// <summary>Stops the subscription (see <see cref="StopAsync"/>).</summary>
    public async ValueTask DisposeAsync()
    {
        await StopAsync().ConfigureAwait(false);
        _stopping?.Dispose();
    }

    private async Task RunAsync(CancellationToken stopping)
    {
        var handledSinceSave = 0;
        var retryDelay = FirstRetryDelay;
        var stage = Stage.Store;
        var batch = BatchHandler is null ? null : new List<RecordedEvent>(Math.Min(BatchLimit, _options.BatchSize));
        UnreadableEventException? unreadable = null;

        // Up to an unreadable event seen ahead, the log is read one event at a time: a store may fail a whole page on it, so
        // only a read of one tells that it is the next event to handle (the events before it are handled first).
        var unreadableAhead = -1L;
        var readSize = _options.BatchSize;

        // Hands the buffered run to the batch handler, then moves past it.
        async Task FlushAsync()
        {
            if (batch is not { Count: > 0 })
            {
                return;
            }

            stage = Stage.Handler;
            var checkpointed = await BatchHandler!(batch, stopping).ConfigureAwait(false);
            stage = Stage.Store;
            Advance(batch[^1].Position);
            if (checkpointed)
            {
                _savedPosition = batch[^1].Position;
            }

            handledSinceSave += batch.Count;
            batch.Clear();
            if (handledSinceSave >= _options.CheckpointEvery)
            {
                await SaveCheckpointAsync(stopping).ConfigureAwait(false);
                handledSinceSave = 0;
            }
        }

        try
        {
            while (true)
            {
                try
                {
                    if (unreadable is not null)
                    {
                        // Its dead letter, then past it; a failure to store it is retried from here like any store failure.
                        await DeadLetterAsync(unreadable, stopping).ConfigureAwait(false);
                        Advance(unreadable.Position);
                        handledSinceSave++;
                        unreadable = null;
                    }

                    // Everything at or below the head is readable now, so once the reads below run dry the
                    // subscription has seen all of it, even events its filter dropped.
                    var head = await _store.GetLastPositionAsync(stopping).ConfigureAwait(false);
                    while (true)
                    {
                        var read = 0;
                        var previous = Position;
                        readSize = unreadableAhead > Position ? 1 : _options.BatchSize;
                        await foreach (var recorded in _store.ReadAllAsync(Position, _options.Filter, readSize, stopping).ConfigureAwait(false))
                        {
                            read++;
                            if (recorded.Position <= previous)
                            {
                                stage = Stage.Fatal;
                                throw new InvalidOperationException(
                                    $"The event store returned position {recorded.Position} after {previous}; positions must increase. The subscription '{SubscriptionId}' stopped.");
                            }

                            previous = recorded.Position;
                            if (batch is not null)
                            {
                                batch.Add(recorded);
                                if (batch.Count >= BatchLimit)
                                {
                                    await FlushAsync().ConfigureAwait(false);
                                }

                                continue;
                            }

                            stage = Stage.Handler;
                            await _handler(recorded, stopping).ConfigureAwait(false);
                            stage = Stage.Store;
                            Advance(recorded.Position);
                            if (++handledSinceSave >= _options.CheckpointEvery)
                            {
                                await SaveCheckpointAsync(stopping).ConfigureAwait(false);
                                handledSinceSave = 0;
                            }
                        }

                        await FlushAsync().ConfigureAwait(false);
                        if (read < readSize)
                        {
                            break;
                        }
                    }

                    if (head > Position)
                    {
                        Advance(head);
                    }

                    if (_savedPosition != Position)
                    {
                        await SaveCheckpointAsync(stopping).ConfigureAwait(false);
                        handledSinceSave = 0;
                    }

                    retryDelay = FirstRetryDelay;
                    await _store.WaitForEventsAsync(Position, stopping).ConfigureAwait(false);
                }
                catch (UnreadableEventException ex) when (stage == Stage.Store && !stopping.IsCancellationRequested && _options.DeadLetterUnreadableEventsTo is not null)
                {
                    if (readSize == 1)
                    {
                        // The next event: dead-lettered at the top of the loop, where a failure to store it is retried like
                        // any store failure.
                        unreadable = ex;
                    }
                    else
                    {
                        // Events of the page before it may not have been handed over: read again one by one up to it.
                        unreadableAhead = ex.Position;
                        batch?.Clear();
                    }
                }
                catch (Exception ex) when (stage == Stage.Store && !stopping.IsCancellationRequested && ex is not CheckpointConflictException and not EventUpcastingException and not UnreadableEventException)
                {
                    // An upcaster or an unreadable row fails the same way on every read, so it is not retried like an outage
                    // (which would loop forever): the subscription stops on it, naming the event.
                    // The store failed, not the handler: go on from the position reached once it answers again (issue 10);
                    // events buffered for a batch but not handed over are read again from there.
                    batch?.Clear();
                    Log.SubscriptionStoreFailed(Logger ?? NullLogger.Instance, ex, SubscriptionId, Position, retryDelay);
                    await Task.Delay(retryDelay, stopping).ConfigureAwait(false);
                    retryDelay = TimeSpan.FromTicks(Math.Min(retryDelay.Ticks * 2, MaxRetryDelay.Ticks));
                }
            }
        }
        catch (OperationCanceledException) when (stopping.IsCancellationRequested)
        {
            await SaveCheckpointAsync(CancellationToken.None).ConfigureAwait(false);
        }
        catch (Exception ex)
        {
            lock (_gate)
            {
                _failure = ex;
            }

            FailWaiters(ex);

            // Keep the progress made before the failure, so a restart resumes right after the last handled event.
            await SaveCheckpointAsync(CancellationToken.None).ConfigureAwait(false);
            throw;
        }
    }

    private async ValueTask DeadLetterAsync(UnreadableEventException unreadable, CancellationToken cancellationToken)
    {
        var now = TimeProvider.GetUtcNow();
        var endpoint = DeadLetterEndpoint ?? SubscriptionId;
        // What still reads of the row (id, type, time, body bytes); the exception's message names its position and stream.
        var salvaged = unreadable.Salvaged ?? new() { MessageId = Guid.Empty, MessageType = "", Time = now, Body = ReadOnlyMemory<byte>.Empty };
        var envelope = DeadLetterHeaders.WithOrigin(salvaged, DeadLetterOrigin, unreadable.Stream, unreadable.Position, SubscriptionId);
        // As the chain's own dead letters: the same event met again by this subscription (a restart before the checkpoint)
        // is kept once; a projection's rebuild (another subscription id) keeps a dead letter of its own generation.
        var deadLetter = FailureRecords.Create(
            DeadLetterHeaders.PipelineDeadLetterId(SubscriptionId, envelope, now), envelope, endpoint, DeadLetterCause.Undecodable, unreadable, now, now, attempts: 1);
        if (await _options.DeadLetterUnreadableEventsTo!.AddAsync(deadLetter, cancellationToken).ConfigureAwait(false))
        {
            Herald.Reliability.DeadLetters.DeadLetterMonitor.Added(DeadLetterMonitor, endpoint, envelope.MessageType);
        }

        Log.SubscriptionUnreadableEventDeadLettered(Logger ?? NullLogger.Instance, unreadable, SubscriptionId, unreadable.Position);
    }

    private async Task SaveCheckpointAsync(CancellationToken cancellationToken)
    {
        var position = Position;
        if (position == _savedPosition)
        {
            return;
        }

        if (SaveCheckpoint is { } save)
        {
            await save(position, cancellationToken).ConfigureAwait(false);
        }
        else
        {
            await _checkpoints.SetCheckpointAsync(SubscriptionId, position, cancellationToken).ConfigureAwait(false);
        }

        _savedPosition = position;
    }

    private void Advance(long position)
    {
        List<TaskCompletionSource>? reached = null;
        lock (_gate)
        {
            Volatile.Write(ref _position, position);
            for (var i = _waiters.Count - 1; i >= 0; i--)
            {
                if (_waiters[i].Position <= position)
                {
                    (reached ??= []).Add(_waiters[i].Signal);
                    _waiters.RemoveAt(i);
                }
            }
        }

        if (reached is not null)
        {
            foreach (var signal in reached)
            {
                signal.TrySetResult();
            }
        }
    }

    private void FailWaiters(Exception error)
    {
        List<TaskCompletionSource> waiting;
        lock (_gate)
        {
            waiting = [.. _waiters.Select(w => w.Signal)];
            _waiters.Clear();
        }

        foreach (var signal in waiting)
        {
            signal.TrySetException(error);
        }
    }

    private enum Stage
    {
        Store,
        Handler,
        Fatal,
    }
}
