using System.Collections.Concurrent;
using System.Diagnostics.Metrics;
using System.Runtime.CompilerServices;
using Herald.Diagnostics;
using Herald.EventSourcing;
using Herald.EventSourcing.Subscriptions;
using Herald.Messages;
using Herald.Persistence;
using Herald.Reliability.DeadLetters;
using Herald.Streams.Topology;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Herald.Streams;

/// <summary>
/// Runs a <see cref="StreamTopology"/> over the event store's <c>$all</c> (or a category) through a catch-up subscription,
/// or over events a transport handler feeds it. Every commit writes the state changes, the sink outputs, the dead letters
/// and the source checkpoint in one unit of work: when the event store and the state store share a database, a restart
/// neither loses nor double-counts an event. State is also queryable while it runs.
/// </summary>
public sealed partial class StreamProcessor : IAsyncDisposable
{
    private static readonly ConcurrentDictionary<StreamProcessor, byte> Active = new();

    // The in-memory state of an application without a registered store: one per service provider, so a processor that
    // restarts in the same application finds what it committed.
    private static readonly ConditionalWeakTable<IServiceProvider, InMemoryStreamStateStore> InMemoryState = new();
    private static readonly Counter<long> Events = HeraldDiagnostics.Meter.CreateCounter<long>("herald.stream.events", "{event}", "Events a stream processor handled.");
    private static readonly Counter<long> LateEvents = HeraldDiagnostics.Meter.CreateCounter<long>("herald.stream.late", "{record}", "Records that came after their window closed.");
    private static readonly Counter<long> DeadLettered = HeraldDiagnostics.Meter.CreateCounter<long>("herald.stream.dead_lettered", "{event}", "Events a stream processor could not decode, key or process.");
    private static readonly ObservableGauge<long> Lag = HeraldDiagnostics.Meter.CreateObservableGauge("herald.stream.lag", Observe, "{event}", "Positions a stream processor is behind the head of the global log.");

    private readonly StreamTopology _topology;
    private readonly StreamProcessorOptions _options;
    private readonly IServiceProvider _services;
    private readonly IEventStore? _events;
    private readonly ICheckpointStore? _checkpoints;
    private readonly IStreamStateStore _state;
    private readonly IDeadLetterStore _deadLetters;
    private readonly UnitOfWorkRunner _runner;
    private readonly MessageTypeRegistry _types;
    private readonly IMessageSerializer _serializer;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;
    private readonly KeyValuePair<string, object?> _tag;
    private readonly List<DeadLetter> _pendingDeadLetters = [];
    private StreamTask _task;
    private EventSubscription? _subscription;
    private long _head;
    private Exception? _commitFailure;
    private long _committed;
    private long _commitTicks;
    private long _commits;
    private readonly List<(long Position, TaskCompletionSource Signal)> _waiters = [];

    /// <summary>
    /// Creates a stopped processor named <paramref name="name"/> (its checkpoint and state are kept under that name) with the
    /// application's services: the event store, checkpoints, unit of work, dead letters and <see cref="IStreamStateStore"/>
    /// (in memory when none is registered).
    /// </summary>
    public StreamProcessor(string name, StreamTopology topology, IServiceProvider services, StreamProcessorOptions? options = null)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(name);
        ArgumentNullException.ThrowIfNull(topology);
        ArgumentNullException.ThrowIfNull(services);
        options ??= StreamProcessorOptions.Default;
        ArgumentOutOfRangeException.ThrowIfLessThan(options.CommitEvery, 1, nameof(options));
        ArgumentOutOfRangeException.ThrowIfLessThan(options.BatchSize, 1, nameof(options));
        ArgumentOutOfRangeException.ThrowIfLessThan(options.AllowedOutOfOrderness, TimeSpan.Zero, nameof(options));
        Name = name;
        _topology = topology;
        _options = options;
        _services = services;
        _events = services.GetService<IEventStore>();
        _checkpoints = services.GetService<ICheckpointStore>();
        _state = services.GetService<IStreamStateStore>() ?? InMemoryState.GetValue(services, static _ => new InMemoryStreamStateStore());
        _deadLetters = services.GetRequiredService<IDeadLetterStore>();
        _runner = services.GetRequiredService<UnitOfWorkRunner>();
        _types = services.GetRequiredService<MessageTypeRegistry>();
        _serializer = services.GetRequiredService<IMessageSerializer>();
        _time = services.GetService<TimeProvider>() ?? TimeProvider.System;
        _logger = services.GetService<ILoggerFactory>()?.CreateLogger<StreamProcessor>() ?? NullLogger<StreamProcessor>.Instance;
        _tag = new("herald.stream", name);
        _task = NewTask();
        if (!options.Source.IsExternal && (_events is null || _checkpoints is null))
        {
            throw new InvalidOperationException($"Stream processor '{name}' reads the event store, but no IEventStore and ICheckpointStore are registered.");
        }
    }

    /// <summary>The processor's name: its checkpoint is <c>stream:{name}</c> and its state is kept under it.</summary>
    public string Name { get; }

    /// <summary>The global position handled so far (the event store source).</summary>
    public long Position => _subscription?.Position ?? 0;

    /// <summary>Completes when the source loop ends: faulted when a commit or the store failed (restart to resume from the last commit).</summary>
    public Task Completion => _subscription?.Completion ?? Task.CompletedTask;

    /// <summary>The current watermark (largest event time seen − allowed out-of-orderness), or null before the first event.</summary>
    public DateTimeOffset? Watermark
    {
        get
        {
            lock (_task.Gate)
            {
                return _task.StreamTime == long.MinValue ? null : new DateTimeOffset(_task.Watermark, TimeSpan.Zero);
            }
        }
    }

    private string CheckpointId => "stream:" + Name;

    /// <summary>Time spent in commits (state + outputs + checkpoint), for the benchmark's checkpoint cost.</summary>
    internal TimeSpan CommitTime => System.Diagnostics.Stopwatch.GetElapsedTime(0, Interlocked.Read(ref _commitTicks));

    internal long Commits => Interlocked.Read(ref _commits);

    /// <summary>Loads the committed state and, for an event-store source, starts following the log from the committed checkpoint.</summary>
    public async Task StartAsync(CancellationToken cancellationToken = default)
    {
        if (_subscription is { Completion.IsCompleted: false })
        {
            throw new InvalidOperationException($"Stream processor '{Name}' is running already.");
        }

        if (_subscription is { } ended)
        {
            // A run that failed: start again from the last commit.
            await ended.DisposeAsync().ConfigureAwait(false);
            _subscription = null;
        }

        var task = NewTask();
        var entries = 0;
        await foreach (var entry in _state.ReadAllAsync(Name, cancellationToken).ConfigureAwait(false))
        {
            task.Load(entry.Store, entry.Key, entry.Value);
            entries++;
        }

        lock (_task.Gate)
        {
            _task = task;
            _commitFailure = null;
            _pendingDeadLetters.Clear();
        }

        if (_options.Source.IsExternal)
        {
            Log.ProcessorStarted(_logger, Name, 0, entries);
            Active.TryAdd(this, 0);
            return;
        }

        var names = _topology.SourceTypes.Select(t => _types.TryGetByType(t, out var info) ? info.Name : null).ToArray();
        if (names.FirstOrDefault(n => n is null) is not null || names.Length == 0)
        {
            var missing = _topology.SourceTypes.Where(t => !_types.TryGetByType(t, out _)).Select(t => t.Name);
            throw new InvalidOperationException($"Stream processor '{Name}' reads event types that are not registered: {string.Join(", ", missing)}. Register them with AddMessageType.");
        }

        Volatile.Write(ref _committed, await _checkpoints!.GetCheckpointAsync(CheckpointId, cancellationToken).ConfigureAwait(false) ?? 0);
        _subscription = new EventSubscription(
            _events!,
            new CommittingCheckpoints(this, _checkpoints!),
            HandleAsync,
            new EventSubscriptionOptions
            {
                SubscriptionId = CheckpointId,
                Filter = (_options.Source.Filter ?? new EventFilter()) with { EventTypes = names! },
                BatchSize = _options.BatchSize,
                CheckpointEvery = _options.CommitEvery,
            });
        await _subscription.StartAsync(cancellationToken).ConfigureAwait(false);
        Active.TryAdd(this, 0);
        Log.ProcessorStarted(_logger, Name, _subscription.Position, entries);
    }

    /// <summary>Stops after the event in hand and commits what was processed.</summary>
    public async Task StopAsync(CancellationToken cancellationToken = default)
    {
        Active.TryRemove(this, out _);
        if (_subscription is { } subscription)
        {
            await subscription.StopAsync(cancellationToken).ConfigureAwait(false);
            await subscription.DisposeAsync().ConfigureAwait(false);
            _subscription = null;
            Log.ProcessorStopped(_logger, Name, subscription.Position);
        }
    }

    /// <summary>The global position up to which state, outputs and dead letters are committed.</summary>
    public long CommittedPosition => Volatile.Read(ref _committed);

    /// <summary>
    /// Completes when the processor has handled and committed everything up to <paramref name="position"/> (its outputs and
    /// dead letters are stored); faults when a commit fails first.
    /// </summary>
    public Task WaitForPositionAsync(long position, CancellationToken cancellationToken = default)
    {
        if (_options.Source.IsExternal)
        {
            throw new InvalidOperationException($"Stream processor '{Name}' does not follow the event store.");
        }

        lock (_waiters)
        {
            if (CommittedPosition >= position)
            {
                return Task.CompletedTask;
            }

            if (_commitFailure is { } failure)
            {
                return Task.FromException(failure);
            }

            var signal = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            _waiters.Add((position, signal));
            return signal.Task.WaitAsync(cancellationToken);
        }
    }

    /// <summary>
    /// Feeds one event from outside the event store (a transport handler) and commits its effects in the caller's unit of
    /// work (the handler's, when called from one): exactly once with the inbox, else at least once.
    /// </summary>
    public async ValueTask ProcessAsync(object message, string key, DateTimeOffset eventTime, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(message);
        ArgumentNullException.ThrowIfNull(key);
        List<StateChange> changes;
        List<PendingOutput> outputs;
        lock (_task.Gate)
        {
            _task.Process(message, key, eventTime);
            changes = _task.TakeChanges();
            outputs = _task.TakeOutputs();
        }

        Events.Add(1, _tag);
        await _runner.RunAsync((services, token) => WriteAsync(services, changes, outputs, [], token), cancellationToken: cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Stops the processor.</summary>
    public async ValueTask DisposeAsync() => await StopAsync().ConfigureAwait(false);

    internal static IEnumerable<Measurement<long>> Observe()
    {
        foreach (var processor in Active.Keys)
        {
            if (processor._subscription is { } subscription)
            {
                yield return new Measurement<long>(Math.Max(0, processor._head - subscription.Position), processor._tag);
            }
        }
    }

    private StreamTask NewTask() => new(_topology, _options.AllowedOutOfOrderness, OnLate);

    private void OnLate(LateRecord record)
    {
        LateEvents.Add(1, _tag);
        Log.LateRecord(_logger, Name, record.Operator, record.EventTime, record.Watermark);
        _options.OnLate?.Invoke(record);
    }

    private ValueTask HandleAsync(RecordedEvent recorded, CancellationToken cancellationToken)
    {
        Events.Add(1, _tag);
        if (recorded.Position > _head)
        {
            _head = recorded.Position;
        }

        object message;
        try
        {
            var type = _types.GetType(recorded.EventType);
            message = _serializer.Deserialize(recorded.Envelope.Body, type);
        }
        catch (Exception ex) when (ex is not OperationCanceledException)
        {
            DeadLetter(recorded, ex, DeadLetterCause.Undecodable, $"The event could not be decoded: {ex.Message}", "decode");
            return ValueTask.CompletedTask;
        }

        lock (_task.Gate)
        {
            try
            {
                _task.Current = null;
                _task.Process(message, recorded.Stream, recorded.Envelope.Time);
            }
            catch (Exception ex) when (ex is not OperationCanceledException)
            {
                var where = _task.Current?.Name ?? "a source";
                var reason = ex is StreamKeyException ? ex.Message : $"'{where}' threw {ex.GetType().Name}: {ex.Message}";
                DeadLetter(recorded, ex, DeadLetterCause.NotRetryable, reason, where);
            }
        }

        return ValueTask.CompletedTask;
    }

    private void DeadLetter(RecordedEvent recorded, Exception error, DeadLetterCause cause, string reason, string where)
    {
        DeadLettered.Add(1, _tag);
        Log.EventDeadLettered(_logger, error, Name, recorded.Position, recorded.EventType, reason);
        var now = _time.GetUtcNow();
        lock (_task.Gate)
        {
            _pendingDeadLetters.Add(new DeadLetter
            {
                Id = Guid.CreateVersion7(now),
                Envelope = recorded.Envelope,
                Endpoint = CheckpointId,
                Cause = cause,
                ErrorType = error.GetType().FullName ?? error.GetType().Name,
                ErrorMessage = reason,
                StackTrace = error.StackTrace,
                Fingerprint = Fingerprint(error, where),
                FirstFailureTime = now,
                LastFailureTime = now,
                AttemptCount = 1,
            });
        }
    }

    // Groups dead letters of one cause: the exception type and the operator it came from (user lambdas have no stable frames).
    private void Release(long position, Exception? failure)
    {
        List<TaskCompletionSource> released = [];
        lock (_waiters)
        {
            if (position > _committed)
            {
                Volatile.Write(ref _committed, position);
            }

            for (var i = _waiters.Count - 1; i >= 0; i--)
            {
                if (failure is not null || _waiters[i].Position <= position)
                {
                    released.Add(_waiters[i].Signal);
                    _waiters.RemoveAt(i);
                }
            }
        }

        foreach (var signal in released)
        {
            if (failure is null)
            {
                signal.TrySetResult();
            }
            else
            {
                signal.TrySetException(failure);
            }
        }
    }

    private static string Fingerprint(Exception error, string where) =>
        Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(System.Text.Encoding.UTF8.GetBytes(error.GetType().FullName + "|" + where)))[..16];

    /// <summary>Writes state, outputs, dead letters and the checkpoint up to <paramref name="position"/> in one unit of work.</summary>
    private async ValueTask CommitAsync(long position, CancellationToken cancellationToken)
    {
        List<StateChange> changes;
        List<PendingOutput> outputs;
        DeadLetter[] deadLetters;
        lock (_task.Gate)
        {
            // After a failed commit the memory is ahead of the store: committing more would store a checkpoint without the
            // state that was lost with the failed commit. Only a restart (which reloads the store) may go on.
            if (_commitFailure is not null)
            {
                throw new InvalidOperationException($"Stream processor '{Name}' failed to commit; restart it to resume from its last commit.", _commitFailure);
            }

            changes = _task.TakeChanges();
            outputs = _task.TakeOutputs();
            deadLetters = [.. _pendingDeadLetters];
            _pendingDeadLetters.Clear();
        }

        var started = System.Diagnostics.Stopwatch.GetTimestamp();
        try
        {
            await _runner.RunAsync(
                async (services, token) =>
                {
                    await WriteAsync(services, changes, outputs, deadLetters, token).ConfigureAwait(false);
                    await _checkpoints!.SetCheckpointAsync(CheckpointId, position, services.GetRequiredService<IUnitOfWork>(), token).ConfigureAwait(false);
                },
                cancellationToken: cancellationToken).ConfigureAwait(false);
        }
        catch (Exception ex)
        {
            lock (_task.Gate)
            {
                _commitFailure = ex;
            }

            Release(long.MinValue, ex);
            throw;
        }

        Interlocked.Add(ref _commitTicks, System.Diagnostics.Stopwatch.GetTimestamp() - started);
        Interlocked.Increment(ref _commits);
        Release(position, null);
    }

    private async ValueTask WriteAsync(IServiceProvider services, List<StateChange> changes, List<PendingOutput> outputs, IReadOnlyList<DeadLetter> deadLetters, CancellationToken cancellationToken)
    {
        var unitOfWork = services.GetRequiredService<IUnitOfWork>();
        if (changes.Count > 0)
        {
            await _state.WriteAsync(Name, changes, unitOfWork, cancellationToken).ConfigureAwait(false);
        }

        if (outputs.Count > 0)
        {
            var context = new StreamSinkContext(Name, services, unitOfWork);
            foreach (var group in outputs.GroupBy(o => o.Sink))
            {
                await group.Key.Writer.WriteAsync([.. group.Select(o => o.Record)], context, cancellationToken).ConfigureAwait(false);
            }
        }

        foreach (var deadLetter in deadLetters)
        {
            await _deadLetters.AddAsync(deadLetter, unitOfWork, cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>
    /// The checkpoint store the subscription sees: its reads are the committed checkpoint, and each of its saves is a commit
    /// of the processor (state + outputs + checkpoint), so the subscription's own cadence decides when the processor commits.
    /// </summary>
    private sealed class CommittingCheckpoints(StreamProcessor processor, ICheckpointStore inner) : ICheckpointStore
    {
        public ValueTask<long?> GetCheckpointAsync(string subscriptionId, CancellationToken cancellationToken = default) =>
            inner.GetCheckpointAsync(subscriptionId, cancellationToken);

        public ValueTask SetCheckpointAsync(string subscriptionId, long position, CancellationToken cancellationToken = default) =>
            processor.CommitAsync(position, cancellationToken);

        public ValueTask SetCheckpointAsync(string subscriptionId, long position, IUnitOfWork unitOfWork, CancellationToken cancellationToken = default) =>
            throw new NotSupportedException("The stream processor commits its checkpoint itself.");
    }
}
