using System.Collections.Concurrent;
using System.Diagnostics.Metrics;
using System.Runtime.CompilerServices;
using System.Text.Json;
using Herald.Diagnostics;
using Herald.EventSourcing;
using Herald.EventSourcing.Subscriptions;
using Herald.EventSourcing.Upcasting;
using Herald.Internal;
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
/// or over events a transport handler feeds it. The source is read once; its stateless operators run there, and each
/// record bound for state goes to the task of its key's partition (<see cref="StreamProcessorOptions.Partitions"/>), which
/// commits its state changes, sink outputs, dead letters and checkpoint in one unit of work: when the event store and the
/// state store share a database, a restart neither loses nor double-counts an event. Processes sharing the store split
/// the partitions through leader election. State is queryable while it runs.
/// </summary>
public sealed partial class StreamProcessor : IAsyncDisposable
{
    private static readonly ConcurrentDictionary<StreamProcessor, byte> Active = new();

    // The in-memory state of an application without a registered store: one per service provider, so a processor that
    // restarts in the same application finds what it committed.
    private static readonly ConditionalWeakTable<IServiceProvider, InMemoryStreamStateStore> InMemoryState = new();
    private static readonly Counter<long> Events = HeraldDiagnostics.Meter.CreateCounter<long>("herald.stream.events", "{event}", "Events a stream processor handled.");
    private static readonly Counter<long> LateEvents = HeraldDiagnostics.Meter.CreateCounter<long>("herald.stream.late", "{record}", "Records that came after their window closed.");
    private static readonly Counter<long> DeadLettered = HeraldDiagnostics.Meter.CreateCounter<long>("herald.stream.dead_lettered", "{event}", "Dead letters a stream processor stored: events it could not decode or key, and records (one per failing branch) it could not process.");
    // How often a later sub-topology looks for the commits of other processes (commits in this process wake it at once).
    private static readonly TimeSpan RepartitionPoll = TimeSpan.FromMilliseconds(200);
    private static readonly ObservableGauge<long> Lag = HeraldDiagnostics.Meter.CreateObservableGauge("herald.stream.lag", Observe, "{event}", "Positions a stream processor is behind the head of the global log.");

    private readonly StreamTopology _topology;
    private readonly StreamProcessorOptions _options;
    private readonly IServiceProvider _services;
    private readonly IEventStore? _events;
    private readonly EventUpcasterRegistry? _upcasters;
    private readonly ICheckpointStore? _checkpoints;
    private readonly IStreamStateStore _state;
    private readonly IDeadLetterStore _deadLetters;
    private readonly UnitOfWorkRunner _runner;
    private readonly MessageTypeRegistry _types;
    private readonly IMessageSerializer _serializer;
    private readonly ILeaderElection? _election;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;
    private readonly bool _repartitioned;
    private readonly KeyValuePair<string, object?> _tag;
    private readonly Action<bool> _countDeadLetter;
    private readonly SemaphoreSlim _switch = new(1, 1);
    private readonly List<(long Position, TaskCompletionSource Signal)> _waiters = [];
    private readonly SemaphoreSlim _external = new(1, 1);
    private readonly TaskCompletionSource _started = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private volatile bool _realign;
    private IUnitOfWork? _holder;
    private StreamRun? _run;
    private bool _running;
    private TaskCompletionSource? _completion;
    private string[] _eventTypes = [];
    private long _head;
    private long _commitTicks;
    private long _commits;

    /// <summary>
    /// Creates a stopped processor named <paramref name="name"/> (its checkpoints and state are kept under that name) with the
    /// application's services: the event store, checkpoints, unit of work, dead letters, leader election and
    /// <see cref="IStreamStateStore"/> (in memory when none is registered).
    /// </summary>
    public StreamProcessor(string name, StreamTopology topology, IServiceProvider services, StreamProcessorOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(topology);
        ArgumentNullException.ThrowIfNull(services);
        options ??= StreamProcessorOptions.Default;
        ValidateName(name, topology, options);
        Validate(topology, options);
        Name = name;
        _topology = topology;
        _options = options;
        _services = services;
        _events = services.GetService<IEventStore>();
        _upcasters = services.GetService<EventUpcasterRegistry>();
        _checkpoints = services.GetService<ICheckpointStore>();
        _state = services.GetService<IStreamStateStore>() ?? InMemoryState.GetValue(services, static _ => new InMemoryStreamStateStore());
        _deadLetters = services.GetRequiredService<IDeadLetterStore>();
        _runner = services.GetRequiredService<UnitOfWorkRunner>();
        _types = services.GetRequiredService<MessageTypeRegistry>();
        _serializer = services.GetRequiredService<IMessageSerializer>();
        _election = services.GetService<ILeaderElection>();
        _time = services.GetService<TimeProvider>() ?? TimeProvider.System;
        _logger = services.GetService<ILoggerFactory>()?.CreateLogger<StreamProcessor>() ?? NullLogger<StreamProcessor>.Instance;
        _tag = new("herald.stream", name);
        _countDeadLetter = CountDeadLetter;
        _repartitioned = Repartitions(topology, options);
        if (!options.Source.IsExternal && (_events is null || _checkpoints is null))
        {
            throw new InvalidOperationException($"Stream processor '{name}' reads the event store, but no IEventStore and ICheckpointStore are registered.");
        }
    }

    /// <summary>The processor's name: its checkpoint is <c>stream:{name}</c> (<c>stream:{name}:{partition}</c> with several partitions) and its state is kept under it.</summary>
    public string Name { get; }

    /// <summary>The global position read so far (the event store source).</summary>
    public long Position => _run?.Subscription?.Position ?? 0;

    /// <summary>Completes when the processor stops: faulted when a commit or the store failed (restart to resume from the last commit).</summary>
    public Task Completion => _completion?.Task ?? Task.CompletedTask;

    /// <summary>
    /// The partitions this process runs now (all of them, unless other processes share the stream); for a transport source
    /// on a key-partitioned broker (Kafka), the numbers of the broker partitions it holds.
    /// </summary>
    public IReadOnlyList<int> OwnedPartitions => FollowsBroker
        ? [.. BrokerRuns().Select(r => r.Partition)]
        : _run is { Stopped: false } run ? [.. run.Partitions.Keys.Order()] : [];

    /// <summary>The current watermark (largest event time seen − allowed out-of-orderness), or null before the first event.</summary>
    public DateTimeOffset? Watermark
    {
        get
        {
            if (_run is not { } run)
            {
                return null;
            }

            lock (run.Router.Gate)
            {
                return run.Router.StreamTime == long.MinValue ? null : EventTime.ToOffset(run.Router.Watermark);
            }
        }
    }

    /// <summary>The global position up to which every partition this process runs has committed its state, outputs and dead letters.</summary>
    public long CommittedPosition => _run?.CommittedPosition ?? 0;

    /// <summary>Time spent in commits (state + outputs + checkpoint), for the benchmark's checkpoint cost.</summary>
    internal TimeSpan CommitTime => System.Diagnostics.Stopwatch.GetElapsedTime(0, Interlocked.Read(ref _commitTicks));

    internal long Commits => Interlocked.Read(ref _commits);

    /// <summary>Test seam: awaited once a run reads its source, before its failure watcher starts.</summary>
    internal Func<StreamRun, Task>? RunReading { get; set; }

    /// <summary>Whether a balancing loop runs (tests: none may outlive a stop or a failure).</summary>
    internal bool Balancing => Volatile.Read(ref _balancing) is not null;

    /// <summary>
    /// Takes its share of the partitions (all of them when no other process runs this stream), loads their committed state
    /// and, for an event-store source, starts following the log from their checkpoints.
    /// </summary>
    public async Task StartAsync(CancellationToken cancellationToken = default)
    {
        await _switch.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            if (_running)
            {
                throw new InvalidOperationException($"Stream processor '{Name}' is running already.");
            }

            if (!_options.Source.IsExternal)
            {
                _eventTypes = EventTypeNames();
            }

            _completion = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            try
            {
                if (_options.Source.IsExternal || _election is null)
                {
                    await StartRunAsync(Enumerable.Range(0, _options.Partitions), cancellationToken).ConfigureAwait(false);
                }
                else
                {
                    await BalanceAsync(cancellationToken).ConfigureAwait(false);
                    StartBalancing();
                }
            }
            catch
            {
                await ReleaseLeasesAsync().ConfigureAwait(false);
                throw;
            }

            _running = true;
            _realign = false;
            _started.TrySetResult();
            Active.TryAdd(this, 0);
        }
        finally
        {
            _switch.Release();
        }
    }

    /// <summary>Stops after the event in hand, commits what was processed and gives its partitions up.</summary>
    public async Task StopAsync(CancellationToken cancellationToken = default)
    {
        await StopBalancingAsync().ConfigureAwait(false);
        await _switch.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            Active.TryRemove(this, out _);
            if (_run is { } run)
            {
                await StopRunAsync(run).ConfigureAwait(false);
            }

            await ReleaseLeasesAsync().ConfigureAwait(false);
            _running = false;

            // A run that failed and was not reported yet (its last commits, say): its watcher leaves a stopped processor alone.
            if (_run?.Failure is { } failure)
            {
                _completion?.TrySetException(failure);
            }
            else
            {
                _completion?.TrySetResult();
            }
        }
        finally
        {
            _switch.Release();
        }
    }

    /// <summary>
    /// Completes when every partition this process runs has handled and committed everything up to
    /// <paramref name="position"/> (its outputs and dead letters are stored); faults when a commit fails first.
    /// </summary>
    public Task WaitForPositionAsync(long position, CancellationToken cancellationToken = default)
    {
        if (_options.Source.IsExternal)
        {
            throw new InvalidOperationException($"Stream processor '{Name}' does not follow the event store.");
        }

        lock (_waiters)
        {
            if (_run is { Failure: { } failure })
            {
                return Task.FromException(failure);
            }

            if (_run is { Partitions.Count: > 0, Stopped: false } && CommittedPosition >= position)
            {
                return Task.CompletedTask;
            }

            var signal = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            _waiters.Add((position, signal));
            return signal.Task.WaitAsync(cancellationToken);
        }
    }

    /// <summary>
    /// Feeds one event from outside the event store (a transport handler) and commits its effects in the caller's unit of
    /// work (the handler's, when called from one): exactly once with the inbox, else at least once. One unit of work at a
    /// time feeds the processor (others wait until it commits or rolls back; after a rollback the committed state is
    /// reloaded). Exceptions of user functions propagate to the caller (whose pipeline retries or dead-letters the message).
    /// </summary>
    public ValueTask ProcessAsync(object message, string key, DateTimeOffset eventTime, CancellationToken cancellationToken = default) =>
        ProcessFromAsync(message, key, eventTime, null, string.Empty, cancellationToken);

    /// <summary>
    /// As <see cref="ProcessAsync(object, string, DateTimeOffset, CancellationToken)"/>; with <paramref name="from"/> (the
    /// message came from that partition of a key-partitioned broker, through <paramref name="queue"/>), the state is the
    /// broker partition's, loaded when this process was given it.
    /// </summary>
    internal async ValueTask ProcessFromAsync(object message, string key, DateTimeOffset eventTime, BrokerPartition? from, string queue, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(message);
        ArgumentNullException.ThrowIfNull(key);
        await _runner.RunAsync(
            async (services, token) =>
            {
                var unitOfWork = services.GetRequiredService<IUnitOfWork>();
                if (!ReferenceEquals(Volatile.Read(ref _holder), unitOfWork))
                {
                    // One unit of work at a time changes the memory, until it commits or rolls back: a rollback then finds
                    // only its own changes there, and the next event reloads the committed state (a retry is not counted
                    // twice, and no other event's change is lost with it).
                    await _external.WaitAsync(token).ConfigureAwait(false);
                    Volatile.Write(ref _holder, unitOfWork);
                    unitOfWork.OnRolledBack(_ => Leave(unitOfWork, realign: true));
                }

                // A message of a partition given up while it waited (revocation timed out): its next owner handles it.
                token.ThrowIfCancellationRequested();
                var writes = from is null
                    ? Apply(await ExternalRunAsync(token).ConfigureAwait(false), message, key, eventTime, out var late)
                    : Apply(await BrokerRunAsync(from, queue, token).ConfigureAwait(false), message, key, eventTime, out late, checkKey: true);
                Events.Add(1, _tag);
                foreach (var (state, changes, outputs, deadLetters) in writes)
                {
                    await WriteAsync(services, state, changes, outputs, deadLetters, token).ConfigureAwait(false);
                }

                if (late is not null)
                {
                    ReportLateOnCommit(unitOfWork, late);
                }

                // After the state store's own commit callbacks, so the next event sees the committed state everywhere.
                unitOfWork.OnCommitted(_ => Leave(unitOfWork, realign: false));
            },
            cancellationToken: cancellationToken).ConfigureAwait(false);
    }

    private ValueTask Leave(IUnitOfWork unitOfWork, bool realign)
    {
        if (ReferenceEquals(Interlocked.CompareExchange(ref _holder, null, unitOfWork), unitOfWork))
        {
            _realign |= realign;
            LeaveBroker(realign);
            _external.Release();
        }

        return ValueTask.CompletedTask;
    }

    // Separate from the caller, so the closure is made only for an event with late records.
    private void ReportLateOnCommit(IUnitOfWork unitOfWork, List<LateRecord> late) =>
        unitOfWork.OnCommitted(_ =>
        {
            ReportLate(late);
            return ValueTask.CompletedTask;
        });

    /// <summary>
    /// Runs one event fed from outside through the router and its partitions, and takes what each partition changed and
    /// the late records it reported (null when none).
    /// </summary>
    private List<(string State, List<StateChange> Changes, List<PendingOutput> Outputs, List<DeadLetter> DeadLetters)> Apply(StreamRun run, object message, string key, DateTimeOffset eventTime, out List<LateRecord>? late, bool checkKey = false)
    {
        var writes = new List<(string State, List<StateChange> Changes, List<PendingOutput> Outputs, List<DeadLetter> DeadLetters)>();
        late = null;
        lock (run.Router.Gate)
        {
            try
            {
                run.Routed.Clear();
                run.Router.Process(message, key, eventTime);
                if (checkKey)
                {
                    CheckBrokerKey(run, key);
                }

                var streamTime = run.Router.StreamTime;
                var routed = run.Routed.ToLookup(r => r.Partition);
                foreach (var partition in run.Partitions.Values)
                {
                    lock (partition.Task.Gate)
                    {
                        foreach (var (_, node, record) in routed[partition.Index])
                        {
                            partition.Task.ProcessRouted(node, record, streamTime);
                        }

                        // Every partition sees the stream time move, as at the event store's commit barriers, even when the
                        // event reached none (filtered out): its windows close, and the stream time commits with this unit
                        // of work, so a reload resumes at the same watermark instead of an older one.
                        partition.Task.Tick(streamTime);
                        writes.Add((partition.StateName, partition.Task.TakeChanges(), partition.Task.TakeOutputs(), TimerDeadLetters(partition.Task, partition.StateName)));
                        if (partition.Task.TakeLate() is { } partitionLate)
                        {
                            late = late is null ? partitionLate : [.. late, .. partitionLate];
                        }
                    }
                }
            }
            catch
            {
                // Part of the event may have changed the memory: the next event starts from the committed state.
                _realign = true;
                throw;
            }
        }

        return writes;
    }

    /// <summary>The run that events fed from outside go to: waits for the start, and reloads the committed state after a rollback.</summary>
    private async ValueTask<StreamRun> ExternalRunAsync(CancellationToken cancellationToken)
    {
        if (!_options.Source.IsExternal)
        {
            throw new InvalidOperationException($"Stream processor '{Name}' reads the event store; only a processor with an external or transport source takes events from ProcessAsync.");
        }

        // The endpoint may deliver before the hosted processor has loaded its state.
        await _started.Task.WaitAsync(cancellationToken).ConfigureAwait(false);
        if (_realign)
        {
            _realign = false;
            await _switch.WaitAsync(cancellationToken).ConfigureAwait(false);
            try
            {
                await StartRunAsync(Enumerable.Range(0, _options.Partitions), cancellationToken).ConfigureAwait(false);
            }
            finally
            {
                _switch.Release();
            }
        }

        return _run is { Stopped: false } run ? run : throw new InvalidOperationException($"Stream processor '{Name}' is stopped.");
    }

    /// <summary>Stops the processor.</summary>
    public async ValueTask DisposeAsync() => await StopAsync().ConfigureAwait(false);

    internal static IEnumerable<Measurement<long>> Observe()
    {
        foreach (var processor in Active.Keys)
        {
            if (processor._run?.Subscription is { } subscription)
            {
                yield return new Measurement<long>(Math.Max(0, Volatile.Read(ref processor._head) - subscription.Position), processor._tag);
            }
        }
    }

    /// <summary>
    /// Throws an <see cref="ArgumentException"/> for a name no processor can run under with <paramref name="options"/>: an
    /// empty one, one holding ':', or one whose longest checkpoint-store key is longer than a checkpoint store keeps.
    /// </summary>
    internal static void ValidateName(string name, StreamTopology topology, StreamProcessorOptions options)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(name);
        if (name.Contains(':', StringComparison.Ordinal))
        {
            // The state and checkpoints of partitions, stages and broker partitions are the name with ':'-separated suffixes
            // ("s:1", "stream:s:1:stage-0", "s:b1"): a name holding one would share another processor's.
            throw new ArgumentException(
                $"The stream processor name '{name}' holds ':', which separates a processor's partitions and stages in the names of its state and checkpoints; a name with it could share another processor's.",
                nameof(name));
        }

        // Else the processor found no checkpoint under a key too long to store and failed at its first save, mid-run. The
        // longest key is the fence (taken where leases share the partitions) of the last partition, or of its last stage.
        var last = options.Partitions - 1;
        var longest = FenceKey(Repartitions(topology, options) ? StageCheckpointIdOf(name, last, topology.StageCount - 1) : CheckpointIdOf(name, options.Partitions, last));
        var over = longest.Length - CheckpointValidation.MaxSubscriptionIdLength;
        if (over > 0)
        {
            throw new ArgumentException(
                $"The stream processor name '{(name.Length > 60 ? name[..60] + "..." : name)}' has {name.Length} characters, too many for its checkpoints: " +
                $"its longest checkpoint key would have {longest.Length} of the at most {CheckpointValidation.MaxSubscriptionIdLength} a checkpoint store keeps, " +
                $"so with {options.Partitions} partition(s) the name may have at most {name.Length - over} characters.",
                nameof(name));
        }
    }

    private static void Validate(StreamTopology topology, StreamProcessorOptions options)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(options.CommitEvery, 1, nameof(options));
        ArgumentOutOfRangeException.ThrowIfLessThan(options.BatchSize, 1, nameof(options));
        ArgumentOutOfRangeException.ThrowIfLessThan(options.Partitions, 1, nameof(options));
        ArgumentOutOfRangeException.ThrowIfLessThan(options.AllowedOutOfOrderness, TimeSpan.Zero, nameof(options));
        ArgumentOutOfRangeException.ThrowIfLessThanOrEqual(options.PartitionBalanceInterval, TimeSpan.Zero, nameof(options));

        // Waited on between balance rounds: a longer one passed here and ended the balance loop at its first wait.
        OptionsProblems.Of(options, static (o, problems) => problems.AtMostLongestWait(nameof(o.PartitionBalanceInterval), o.PartitionBalanceInterval))
            .ThrowFirstAsArgumentException();
        if (options.Partitions > 1 && topology.RekeysAfterState.Count > 0 && (options.Source.IsExternal || topology.StageCount == 0))
        {
            var why = options.Source.IsExternal
                ? "which a processor fed from outside the event store (an external or transport source) runs in one partition only"
                : "and a table is joined on both sides of it, so the topology cannot be split there";
            throw new ArgumentException(
                $"With {options.Partitions} partitions {string.Join(", ", topology.RekeysAfterState.Select(n => $"'{n}'"))} re-keys after one " +
                $"stateful operator and feeds state again, {why}. Re-key before the first aggregate, join or table, or run the stream with one partition.",
                nameof(options));
        }
    }

    private string StateName(int partition) => _options.Partitions == 1 ? Name : $"{Name}:{partition}";

    private static bool Repartitions(StreamTopology topology, StreamProcessorOptions options) =>
        options.Partitions > 1 && topology.StageCount > 1 && !options.Source.IsExternal;

    private static string CheckpointIdOf(string name, int partitions, int partition) => partitions == 1 ? "stream:" + name : $"stream:{name}:{partition}";

    private static string StageCheckpointIdOf(string name, int partition, int stage) => $"stream:{name}:{partition}:stage-{stage}";

    private static string FenceKey(string checkpointId) => "$stream-leader:" + checkpointId;

    private string CheckpointId(int partition) => CheckpointIdOf(Name, _options.Partitions, partition);

    private StreamTask NewTask(int stage = 0) => new(_topology, _options.AllowedOutOfOrderness)
    {
        Services = _services,
        Stage = stage,
        Crossings = _repartitioned && stage < _topology.StageCount - 1 ? [] : null,
    };

    private string StageStateName(int partition, int stage) => $"{Name}:{partition}:stage-{stage}";

    private string StageCheckpointId(int partition, int stage) => StageCheckpointIdOf(Name, partition, stage);

    private EventFilter Widen(EventFilter filter) => _upcasters?.Widen(filter) ?? filter;

    private string[] EventTypeNames()
    {
        var missing = _topology.SourceTypes.Where(t => !_types.TryGetByType(t, out _)).Select(t => t.Name).ToList();
        if (missing.Count > 0 || _topology.SourceTypes.Count == 0)
        {
            throw new InvalidOperationException($"Stream processor '{Name}' reads event types that are not registered: {string.Join(", ", missing)}. Register them with AddMessageType.");
        }

        return [.. _topology.SourceTypes.Select(t => { _types.TryGetByType(t, out var info); return info!.Name; })];
    }

    /// <summary>
    /// Hands the late records of a commit that succeeded to the counter, the log and <see cref="StreamProcessorOptions.OnLate"/>:
    /// only then, since a rolled-back or failed commit runs its events again and would report them twice.
    /// </summary>
    private void ReportLate(List<LateRecord>? late)
    {
        if (late is null)
        {
            return;
        }

        foreach (var record in late)
        {
            LateEvents.Add(1, _tag);
            Log.LateRecord(_logger, Name, record.Operator, record.EventTime, record.Watermark);
            try
            {
                _options.OnLate?.Invoke(record);
            }
            catch (Exception ex)
            {
                // The commit is done: a throw could undo nothing, only fail the processor or skip the unit of work's other callbacks.
                Log.LateHandlerFailed(_logger, ex, Name, record.Operator, record.EventTime);
            }
        }
    }

    /// <summary>Loads the state and checkpoints of <paramref name="owned"/> and starts reading the source for them.</summary>
    private async Task StartRunAsync(IEnumerable<int> owned, CancellationToken cancellationToken)
    {
        var partitions = new List<StreamPartition>();
        var entries = 0;
        foreach (var index in owned)
        {
            // The term first: once it is stored, a process that held the partition before cannot commit what this one loads.
            var lease = _leases.GetValueOrDefault(index);
            var fence = lease is null ? null : await TakeFenceAsync(CheckpointId(index), cancellationToken).ConfigureAwait(false);
            var (task, loaded) = await LoadTaskAsync(StateName(index), cancellationToken).ConfigureAwait(false);
            entries += loaded;
            var checkpoint = _options.Source.IsExternal ? 0 : await _checkpoints!.GetCheckpointAsync(CheckpointId(index), cancellationToken).ConfigureAwait(false) ?? 0;
            var partition = new StreamPartition(index, StateName(index), CheckpointId(index), task, checkpoint) { Lease = lease, Fence = fence };
            partitions.Add(partition);
            for (var stage = 1; _repartitioned && stage < _topology.StageCount; stage++)
            {
                var stageFence = lease is null ? null : await TakeFenceAsync(StageCheckpointId(index, stage), cancellationToken).ConfigureAwait(false);
                var stageTask = NewTask(stage);
                await foreach (var entry in _state.ReadAllAsync(StageStateName(index, stage), cancellationToken).ConfigureAwait(false))
                {
                    stageTask.Load(entry.Store, entry.Key, entry.Value);
                    entries++;
                }

                var taken = await _checkpoints!.GetCheckpointAsync(StageCheckpointId(index, stage), cancellationToken).ConfigureAwait(false) ?? 0;
                partition.Stages.Add(new StreamStage(stage, partition, StageStateName(index, stage), StageCheckpointId(index, stage), stageTask, taken) { Fence = stageFence });
            }
        }

        var run = new StreamRun(_topology, _options.AllowedOutOfOrderness, _services, _options.Partitions, partitions);

        // The source resumes at the lowest checkpoint, with the stream time that partition committed there; events fed from
        // outside have no position, and the stream time is the largest any partition saw.
        if ((_options.Source.IsExternal ? partitions.MaxBy(p => p.Task.StreamTime) : partitions.MinBy(p => p.Checkpoint)) is { } first)
        {
            run.Router.Observe(first.Task.StreamTime);
        }

        if (!_options.Source.IsExternal && partitions.Count > 0)
        {
            foreach (var partition in partitions)
            {
                partition.Loop = Task.Run(() => PartitionLoopAsync(run, partition), CancellationToken.None);
                foreach (var stage in partition.Stages)
                {
                    stage.Loop = Task.Run(() => StageLoopAsync(run, stage), CancellationToken.None);
                }
            }

            run.Subscription = new EventSubscription(
                _events!,
                new CommittingCheckpoints(this, run),
                (recorded, token) => HandleAsync(run, recorded),
                new EventSubscriptionOptions
                {
                    SubscriptionId = "stream:" + Name,
                    // Each source type under its former names too: the upcasters rename those events as they are handled.
                    Filter = Widen((_options.Source.Filter ?? new EventFilter()) with { EventTypes = _eventTypes }),
                    BatchSize = _options.BatchSize,
                    CheckpointEvery = _options.CommitEvery,
                });
            try
            {
                await run.Subscription.StartAsync(cancellationToken).ConfigureAwait(false);
            }
            catch
            {
                await StopRunAsync(run).ConfigureAwait(false);
                throw;
            }

            if (RunReading is { } reading)
            {
                await reading(run).ConfigureAwait(false);
            }

            _ = WatchAsync(run);
        }

        _run = run;
        Release(null);
        Log.ProcessorStarted(_logger, Name, run.StartPosition, entries);
        if (_options.Partitions > 1)
        {
            Log.PartitionsOwned(_logger, Name, string.Join(",", run.Partitions.Keys.Order()), _options.Partitions);
        }
    }

    // One fence per committing loop (a partition's and each of its later stages'), since each moves its fence in turn.
    private ValueTask<LeaderFence> TakeFenceAsync(string checkpointId, CancellationToken cancellationToken) =>
        LeaderFence.TakeAsync(_checkpoints!, _runner, FenceKey(checkpointId), cancellationToken);

    /// <summary>A task with the committed state kept under <paramref name="stateName"/>, and how many entries it loaded.</summary>
    private async Task<(StreamTask Task, int Entries)> LoadTaskAsync(string stateName, CancellationToken cancellationToken)
    {
        var task = NewTask();
        var entries = 0;
        await foreach (var entry in _state.ReadAllAsync(stateName, cancellationToken).ConfigureAwait(false))
        {
            task.Load(entry.Store, entry.Key, entry.Value);
            entries++;
        }

        return (task, entries);
    }

    /// <summary>Stops reading, lets every partition commit what it has, and ends the run.</summary>
    private async Task StopRunAsync(StreamRun run)
    {
        if (run.Stopped)
        {
            return;
        }

        run.Stopped = true;
        if (run.Subscription is { } subscription)
        {
            // Its last checkpoint save is a final barrier: each partition commits up to the last event read.
            await subscription.StopAsync(CancellationToken.None).ConfigureAwait(false);
            await subscription.DisposeAsync().ConfigureAwait(false);
        }

        foreach (var partition in run.Partitions.Values)
        {
            partition.Complete();
        }

        await Task.WhenAll(run.Partitions.Values.Select(p => p.Loop)).ConfigureAwait(false);

        // Each later sub-topology takes what the one before committed, then ends.
        for (var stage = 0; stage < _topology.StageCount - 1; stage++)
        {
            var stages = run.Partitions.Values.Where(p => p.Stages.Count > stage).Select(p => p.Stages[stage]).ToList();
            foreach (var each in stages)
            {
                await each.Stopping.CancelAsync().ConfigureAwait(false);
            }

            await Task.WhenAll(stages.Select(s => s.Loop)).ConfigureAwait(false);
            foreach (var each in stages)
            {
                each.Stopping.Dispose();
            }
        }

        Log.ProcessorStopped(_logger, Name, run.Subscription?.Position ?? 0);
    }

    /// <summary>When a run fails, stops it, gives the partitions up and faults <see cref="Completion"/>.</summary>
    private async Task WatchAsync(StreamRun run)
    {
        var subscription = run.Subscription!.Completion;
        await Task.WhenAny(run.Failed.Task, subscription).ConfigureAwait(false);
        if (run.Failure is null && subscription.IsFaulted && !run.Stopped)
        {
            Fail(run, subscription.Exception!.InnerException ?? subscription.Exception);
        }

        // Decided holding the switch: whoever stopped the run meanwhile (a balance round, StopAsync) has finished its last
        // commits, and a run the balancer replaced or a processor stopped is not this watcher's. Stopping the balancing
        // before looking left a processor running without it (the round had replaced the run), or missed a loop
        // StartAsync had not started yet (LeaseLossTests).
        await _switch.WaitAsync().ConfigureAwait(false);
        try
        {
            if (run.Failure is not { } failure || !ReferenceEquals(_run, run) || !_running)
            {
                return;
            }

            // Under the switch the loop sleeps or waits for it, so it ends without another round.
            await StopBalancingAsync().ConfigureAwait(false);
            await StopRunAsync(run).ConfigureAwait(false);
            await ReleaseLeasesAsync().ConfigureAwait(false);
            _running = false;
            Active.TryRemove(this, out _);
            _completion?.TrySetException(failure);
        }
        finally
        {
            _switch.Release();
        }
    }

    private void Fail(StreamRun run, Exception error)
    {
        if (run.Fail(error))
        {
            Release(error);
        }
    }

    private async ValueTask HandleAsync(StreamRun run, RecordedEvent recorded)
    {
        if (run.Failure is { } failure)
        {
            throw new InvalidOperationException($"Stream processor '{Name}' failed to commit; restart it to resume from its last commit.", failure);
        }

        Events.Add(1, _tag);
        if (recorded.Position > Volatile.Read(ref _head))
        {
            Volatile.Write(ref _head, recorded.Position);
        }

        var home = StreamPartitioner.PartitionOf(recorded.Stream, run.PartitionCount);
        object message;
        try
        {
            // Through the upcasters registered in DI, as the consuming pipeline and the aggregate repository read: an event
            // stored at an old schema version reaches the topology migrated. Here and not in the read, so an event the
            // upcasters cannot migrate is dead-lettered like any undecodable one instead of failing the read forever.
            // One the upcasters leave below its type's registered version would be read as a shape it does not have.
            var upcast = _upcasters?.Upcast(recorded) ?? recorded;
            var type = _types.GetByName(upcast.EventType);
            if (RegisteredVersionCheck.Behind(upcast.Envelope, type) is { } behind)
            {
                throw behind;
            }

            message = _serializer.Deserialize(upcast.Envelope.Body, type.ClrType);
            recorded = upcast;
        }
        catch (Exception ex) when (ex is not OperationCanceledException)
        {
            // An event that cannot be decoded has no key: it belongs to the partition of its stream.
            if (Owns(run, home, recorded.Position))
            {
                await Send(run, home, recorded.Position, DeadLetterWork(recorded, ex, DeadLetterCause.Undecodable, $"The event could not be decoded: {ex.Message}", "decode")).ConfigureAwait(false);
            }

            return;
        }

        (int Partition, Node Node, StreamRecord Record)[] routed;
        long streamTime;
        (Exception Error, string Where)? refused = null;
        lock (run.Router.Gate)
        {
            run.Routed.Clear();
            try
            {
                run.Router.Current = null;
                run.Router.Process(message, recorded.Stream, recorded.Envelope.Time);
            }
            catch (Exception ex) when (ex is not OperationCanceledException and not StreamLookupException)
            {
                refused = (ex, StreamKeyException.Operator(ex, run.Router.Current?.Name ?? "a source"));
            }

            streamTime = run.Router.StreamTime;
            routed = [.. run.Routed];
        }

        if (refused is null)
        {
            foreach (var (partition, node, record) in routed)
            {
                await Send(run, partition, recorded.Position, new PartitionWork(node, record, streamTime, recorded, 0, null)).ConfigureAwait(false);
            }
        }
        else if (refused is var (error, where) && Owns(run, home, recorded.Position))
        {
            // Dead-lettered as a whole: what the router sent on before the failure is not processed, or a replay of the
            // dead letter would count it twice.
            var reason = StreamKeyException.Reason(error, where);
            await Send(run, home, recorded.Position, DeadLetterWork(recorded, error, DeadLetterCause.NotRetryable, reason, where)).ConfigureAwait(false);
        }
    }

    private static bool Owns(StreamRun run, int partition, long position) =>
        run.Partitions.TryGetValue(partition, out var owner) && position > owner.Checkpoint;

    private static ValueTask Send(StreamRun run, int partition, long position, PartitionWork work) =>
        Owns(run, partition, position) ? run.Partitions[partition].EnqueueAsync(work) : ValueTask.CompletedTask;

    private PartitionWork DeadLetterWork(RecordedEvent recorded, Exception error, DeadLetterCause cause, string reason, string where) =>
        new(null, default, 0, recorded, 0, CreateDeadLetter(recorded, error, cause, reason, where));

    /// <summary>Sends a commit barrier at <paramref name="position"/> to every partition, behind the records read before it.</summary>
    private async ValueTask BarrierAsync(StreamRun run, long position)
    {
        if (run.Failure is { } failure)
        {
            throw new InvalidOperationException($"Stream processor '{Name}' failed to commit; restart it to resume from its last commit.", failure);
        }

        long streamTime;
        lock (run.Router.Gate)
        {
            streamTime = run.Router.StreamTime;
        }

        foreach (var partition in run.Partitions.Values)
        {
            if (position > partition.Checkpoint)
            {
                await partition.EnqueueAsync(new PartitionWork(null, default, streamTime, null, position, null)).ConfigureAwait(false);
            }
        }
    }

    private async Task PartitionLoopAsync(StreamRun run, StreamPartition partition)
    {
        try
        {
            await foreach (var work in partition.Reader.ReadAllAsync().ConfigureAwait(false))
            {
                if (work.DeadLetter is { } deadLetter)
                {
                    lock (partition.Task.Gate)
                    {
                        partition.DeadLetters.Add(deadLetter);
                    }
                }
                else if (work.Node is { } node)
                {
                    Process(partition, node, work);
                }
                else
                {
                    await CommitAsync(run, partition, work.CommitAt, work.StreamTime).ConfigureAwait(false);
                }
            }
        }
        catch (Exception ex)
        {
            // A failed commit (or a run failed elsewhere): the memory is ahead of the store, so nothing commits after it.
            Fail(run, ex);
        }
    }

    private void Process(StreamPartition partition, Node node, in PartitionWork work)
    {
        var task = partition.Task;
        lock (task.Gate)
        {
            try
            {
                task.Current = null;
                task.Position = work.Source!.Position;
                task.ProcessRouted(node, work.Record, work.StreamTime);
            }
            catch (Exception ex) when (ex is not OperationCanceledException and not StreamLookupException)
            {
                var where = StreamKeyException.Operator(ex, task.Current?.Name ?? node.Name);
                var reason = StreamKeyException.Reason(ex, where);
                partition.DeadLetters.Add(CreateDeadLetter(work.Source!, ex, DeadLetterCause.NotRetryable, reason, where));
            }
        }
    }

    // Counted once stored, from the store's report after the commit: a commit that fails is replayed and makes the dead
    // letter again, and an id held already adds nothing.
    private void CountDeadLetter(bool added)
    {
        if (added)
        {
            DeadLettered.Add(1, _tag);
        }
    }

    private DeadLetter CreateDeadLetter(RecordedEvent recorded, Exception error, DeadLetterCause cause, string reason, string where)
    {
        Log.EventDeadLettered(_logger, error, Name, recorded.Position, recorded.EventType, reason);
        var now = _time.GetUtcNow();
        return new DeadLetter
        {
            Id = Guid.CreateVersion7(now),
            // Named as a stream processor's, so a retry from the dead letters refuses it rather than send it to a queue.
            Envelope = recorded.Envelope.WithHeader(HeaderNames.DeadLetterOrigin, nameof(DeadLetterOrigin.StreamProcessor)),
            Endpoint = "stream:" + Name,
            Cause = cause,
            ErrorType = error.GetType().FullName ?? error.GetType().Name,
            ErrorMessage = reason,
            StackTrace = error.StackTrace,
            Fingerprint = Fingerprint(error, where),
            FirstFailureTime = now,
            LastFailureTime = now,
            AttemptCount = 1,
        };
    }

    /// <summary>
    /// The dead letters of what <paramref name="task"/>'s timers emitted and a user function refused since the last call:
    /// the emitted record (key, value, time) as JSON under the task's state name, so nothing the timer closed vanishes.
    /// </summary>
    private List<DeadLetter> TimerDeadLetters(StreamTask task, string stateName)
    {
        var deadLetters = new List<DeadLetter>();
        foreach (var failure in task.TakeTimerFailures())
        {
            var body = JsonSerializer.SerializeToUtf8Bytes(
                new
                {
                    failure.Timer,
                    Key = failure.Key is null ? (JsonElement?)null : JsonSerializer.SerializeToElement(failure.Key, failure.Key.GetType(), StateCodec.Json),
                    Value = failure.Value is null ? (JsonElement?)null : JsonSerializer.SerializeToElement(failure.Value, failure.Value.GetType(), StateCodec.Json),
                    Time = new DateTimeOffset(failure.Time, TimeSpan.Zero),
                },
                StateCodec.Json);
            var envelope = new Envelope
            {
                MessageId = Guid.CreateVersion7(_time.GetUtcNow()),
                MessageType = "$stream-timer",
                Time = new DateTimeOffset(failure.Time, TimeSpan.Zero),
                Body = body,
            };
            var error = failure.Error;
            var reason = StreamKeyException.Reason(error, failure.Operator) +
                $" (on what '{failure.Timer}' emitted when the watermark closed it)";
            deadLetters.Add(CreateDeadLetter(new RecordedEvent(stateName, 0, failure.Position, _time.GetUtcNow(), envelope), error, DeadLetterCause.NotRetryable, reason, failure.Operator));
        }

        return deadLetters;
    }

    // Groups dead letters of one cause: the exception type and the operator it came from (user lambdas have no stable frames).
    private static string Fingerprint(Exception error, string where) =>
        Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(System.Text.Encoding.UTF8.GetBytes(error.GetType().FullName + "|" + where)))[..16];

    /// <summary>Releases the waiters the committed position reached, or all of them with <paramref name="failure"/>.</summary>
    private void Release(Exception? failure)
    {
        List<(TaskCompletionSource Signal, bool Reached)> released = [];
        lock (_waiters)
        {
            var committed = _run is { Partitions.Count: > 0, Stopped: false } run ? run.CommittedPosition : long.MinValue;
            for (var i = _waiters.Count - 1; i >= 0; i--)
            {
                if (failure is not null || _waiters[i].Position <= committed)
                {
                    released.Add((_waiters[i].Signal, failure is null));
                    _waiters.RemoveAt(i);
                }
            }
        }

        foreach (var (signal, _) in released)
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

    /// <summary>
    /// Writes a partition's state, outputs, dead letters and checkpoint up to <paramref name="position"/> in one unit of
    /// work, after letting its timers see the router's stream time. Nothing to write: nothing is written (a replay of
    /// those events would change nothing either).
    /// </summary>
    private async ValueTask CommitAsync(StreamRun run, StreamPartition partition, long position, long streamTime)
    {
        List<StateChange> changes;
        List<PendingOutput> outputs;
        DeadLetter[] deadLetters;
        List<LateRecord>? late;
        Dictionary<string, List<StateChange>>? logs = null;
        lock (partition.Task.Gate)
        {
            partition.Task.Position = position;
            partition.Task.Tick(streamTime);
            changes = partition.Task.TakeChanges();
            outputs = partition.Task.TakeOutputs();
            late = partition.Task.TakeLate();
            deadLetters = [.. partition.DeadLetters, .. TimerDeadLetters(partition.Task, partition.StateName)];
            partition.DeadLetters.Clear();
            if (_repartitioned && (partition.Task.Crossings!.Count > 0 || position > partition.Writer.MarkedAt))
            {
                // Every barrier moves the mark, even without records: the next stage takes records only up to the lowest mark.
                logs = partition.Writer.Changes(Name, 1, partition.Index, run.PartitionCount, partition.Task.TakeCrossings(), position, partition.Task.StreamTime);
            }
        }

        // Late records alone still move the checkpoint: replayed after a restart, they would be reported again.
        if (changes.Count > 0 || outputs.Count > 0 || deadLetters.Length > 0 || logs is not null || late is not null)
        {
            await CommitPartitionAsync(
                run,
                partition,
                partition,
                async (services, token) =>
                {
                    await WriteAsync(services, partition.StateName, changes, outputs, deadLetters, token).ConfigureAwait(false);
                    await WriteLogsAsync(services, logs, token).ConfigureAwait(false);
                    await _checkpoints!.SetCheckpointAsync(partition.CheckpointId, position, services.GetRequiredService<IUnitOfWork>(), token).ConfigureAwait(false);
                }).ConfigureAwait(false);
        }

        ReportLate(late);
        partition.MarkCommitted(position);
        if (logs is not null)
        {
            partition.Writer.MarkedAt = position;
            WakeStage(run, 1);
        }

        Release(null);
    }

    /// <summary>
    /// Runs one commit of <paramref name="unit"/> (<paramref name="partition"/> or one of its later stages) in a unit of
    /// work, unless the run failed or the partition's lease is lost; fenced by the unit's term, so it fails and writes
    /// nothing once another process took the partition over, even before this one notices the loss of the lease.
    /// </summary>
    private async ValueTask CommitPartitionAsync(StreamRun run, StreamPartition partition, StreamUnit unit, Func<IServiceProvider, CancellationToken, ValueTask> write)
    {
        if (run.Failure is { } failure)
        {
            throw new InvalidOperationException($"Stream processor '{Name}' failed to commit; restart it to resume from its last commit.", failure);
        }

        // Another process may own the partition already: its commits, not this one's, must stand.
        var lost = $"Stream processor '{Name}' lost partition {partition.Index}; it commits nothing more for it.";
        if (partition.Lease is { IsHeld: false })
        {
            throw new LeaseLostException(lost);
        }

        var started = System.Diagnostics.Stopwatch.GetTimestamp();
        if (unit.Fence is { } fence)
        {
            await fence.RunAsync(write, lost, CancellationToken.None).ConfigureAwait(false);
        }
        else
        {
            await _runner.RunAsync(write, cancellationToken: CancellationToken.None).ConfigureAwait(false);
        }

        Interlocked.Add(ref _commitTicks, System.Diagnostics.Stopwatch.GetTimestamp() - started);
        Interlocked.Increment(ref _commits);
    }

    private async ValueTask WriteAsync(IServiceProvider services, string stateName, List<StateChange> changes, List<PendingOutput> outputs, IReadOnlyList<DeadLetter> deadLetters, CancellationToken cancellationToken)
    {
        var unitOfWork = services.GetRequiredService<IUnitOfWork>();
        if (changes.Count > 0)
        {
            await _state.WriteAsync(stateName, changes, unitOfWork, cancellationToken).ConfigureAwait(false);
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
            await _deadLetters.AddAsync(deadLetter, unitOfWork, _countDeadLetter, cancellationToken).ConfigureAwait(false);
        }
    }

    /// <summary>
    /// The checkpoint store the subscription sees: it starts at the lowest checkpoint of the owned partitions, and each of
    /// its saves is a commit barrier sent to every partition, so the subscription's own cadence decides when they commit.
    /// </summary>
    private sealed class CommittingCheckpoints(StreamProcessor processor, StreamRun run) : ICheckpointStore
    {
        public ValueTask<long?> GetCheckpointAsync(string subscriptionId, CancellationToken cancellationToken = default) =>
            ValueTask.FromResult<long?>(run.StartPosition);

        public ValueTask SetCheckpointAsync(string subscriptionId, long position, CancellationToken cancellationToken = default) =>
            processor.BarrierAsync(run, position);

        public ValueTask SetCheckpointAsync(string subscriptionId, long position, IUnitOfWork unitOfWork, CancellationToken cancellationToken = default) =>
            throw new NotSupportedException("The stream processor commits its checkpoints itself.");
    }
}
