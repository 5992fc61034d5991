using System.Collections.Concurrent;
using System.Diagnostics.Metrics;
using System.Threading.Channels;
using Herald.Diagnostics;
using Herald.EventSourcing;
using Herald.EventSourcing.Subscriptions;
using Herald.Handling;
using Herald.Handling.Pipeline;
using Herald.Hosting;
using Herald.Internal;
using Herald.Persistence;
using Herald.Reliability.DeadLetters;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Herald.Projections;

/// <summary>
/// The projections of this host: their status and lag (also the <c>herald.projection.lag</c> gauge), and rebuilds. Async
/// projections run in the background on the node that leads each of them (the leader-election port), from their
/// checkpoint, through the shared consuming chain (retries, dead letters, tracing).
/// </summary>
public sealed class ProjectionManager
{
    private static readonly ConcurrentDictionary<ProjectionManager, byte> Active = new();

    // How often a node that does not run a projection looks at its checkpoint while a caller waits for a position.
    private static readonly TimeSpan RemoteWaitInterval = TimeSpan.FromMilliseconds(50);

    private readonly Dictionary<string, ProjectionRuntime> _projections;
    private readonly IEventStore _events;
    private readonly ICheckpointStore _checkpoints;
    private readonly IReadModelStore _readModels;
    private readonly ILeaderElection _election;
    private readonly EndpointPipelineFactory _pipelines;
    private readonly UnitOfWorkRunner _runner;
    private readonly TimeProvider _time;
    private readonly ProjectionOptions _options;
    private readonly ILogger _logger;
    private readonly GaugeFreshness _lagFreshness;
    private IReadOnlyList<ProjectionStatus> _latest = [];

    internal ProjectionManager(
        IEnumerable<ProjectionRegistration> registrations,
        IEventStore events,
        ICheckpointStore checkpoints,
        IReadModelStore readModels,
        ILeaderElection election,
        EndpointPipelineFactory pipelines,
        UnitOfWorkRunner runner,
        TimeProvider time,
        ProjectionOptions options,
        ILoggerFactory? loggerFactory)
    {
        _projections = registrations.ToDictionary(r => r.Projection.Name, r => new ProjectionRuntime(r.Projection, r.Mode), StringComparer.Ordinal);
        _events = events;
        _checkpoints = checkpoints;
        _readModels = readModels;
        _election = election;
        _pipelines = pipelines;
        _runner = runner;
        _time = time;
        _options = options;
        _logger = (loggerFactory ?? NullLoggerFactory.Instance).CreateLogger("Herald.Projections");
        _lagFreshness = new GaugeFreshness(time, options.StatusInterval, _logger, MetricNames.ProjectionLag, string.Join(", ", _projections.Keys));
    }

    /// <summary>This node's runners, and their events, that wait for a delayed retry (for Herald.Testing's fake clock).</summary>
    internal ProjectionRetryWaits RetryWaits { get; } = new();

    /// <summary>The names of the registered projections.</summary>
    public IReadOnlyCollection<string> Names => _projections.Keys;

    /// <summary>The statuses of every projection, with the lag measured now.</summary>
    public async ValueTask<IReadOnlyList<ProjectionStatus>> GetStatusAsync(CancellationToken cancellationToken = default)
    {
        var head = await _events.GetLastPositionAsync(cancellationToken).ConfigureAwait(false);
        var now = _time.GetUtcNow();
        var statuses = new List<ProjectionStatus>(_projections.Count);
        foreach (var projection in _projections.Values)
        {
            statuses.Add(await StatusAsync(projection, head, now, cancellationToken).ConfigureAwait(false));
        }

        _latest = statuses;
        return statuses;
    }

    /// <summary>The status of one projection.</summary>
    /// <exception cref="KeyNotFoundException">No projection of that name is registered.</exception>
    public async ValueTask<ProjectionStatus> GetStatusAsync(string name, CancellationToken cancellationToken = default)
    {
        var projection = Get(name);
        var head = await _events.GetLastPositionAsync(cancellationToken).ConfigureAwait(false);
        return await StatusAsync(projection, head, _time.GetUtcNow(), cancellationToken).ConfigureAwait(false);
    }

    /// <summary>
    /// Rebuilds an async projection blue/green: replays the whole log into a new generation of its tables while the live
    /// one keeps serving reads, then, once caught up, switches reads and the runner to it in one unit of work and drops the
    /// old generation. Completes when the switch is done. Called on a node that does not run the projection, it asks the
    /// node that leads it (a request in the checkpoint store, which the leader looks for every
    /// <see cref="ProjectionOptions.StatusInterval"/>) and completes when that node has rebuilt it.
    /// </summary>
    /// <exception cref="KeyNotFoundException">No projection of that name is registered.</exception>
    /// <exception cref="InvalidOperationException">It is inline, or the leader's rebuild failed (its log says why).</exception>
    public async Task RebuildAsync(string name, CancellationToken cancellationToken = default)
    {
        var projection = Get(name);
        if (projection.Mode != ProjectionMode.Async)
        {
            throw new InvalidOperationException($"Projection '{name}' is inline: it changes in the appending unit of work and cannot be replayed beside itself. Register it as async to rebuild it.");
        }

        if (projection.QueueRebuild() is { } request && await request.Task.WaitAsync(cancellationToken).ConfigureAwait(false))
        {
            return;
        }

        // Not run here, or this node stopped leading it before taking the request: asked of whichever node leads it.
        await RequestRebuildAsync(name, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>
    /// Waits until the projection <paramref name="name"/> has applied everything up to <paramref name="position"/> (a
    /// position in <c>$all</c>, such as an append's last), so that a read of its read model sees those events: read-your-writes
    /// after a command. On the node that runs it, completes as it applies them; on any other node, when the checkpoint of the
    /// generation that serves reads reaches it (looked at every 50 ms). An inline projection applies the events in their
    /// commit: completes at once. Bound it with a token: it waits as long as the projection is behind.
    /// </summary>
    /// <exception cref="KeyNotFoundException">No projection of that name is registered.</exception>
    public Task WaitForPositionAsync(string name, long position, CancellationToken cancellationToken = default)
    {
        var projection = Get(name);
        if (projection.Mode == ProjectionMode.Inline)
        {
            return Task.CompletedTask;
        }

        return projection.Live is { } live && live.Position >= position ? Task.CompletedTask : WaitAsync(projection, position, cancellationToken);
    }

    private async Task WaitAsync(ProjectionRuntime projection, long position, CancellationToken cancellationToken)
    {
        while (true)
        {
            if (projection.Live is { } live)
            {
                try
                {
                    await live.WaitForPositionAsync(position, cancellationToken).ConfigureAwait(false);
                    return;
                }
                catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
                {
                    // That runner stopped: this node stopped leading it, or a rebuild switched to a new generation's
                    // runner. The checkpoint tells until the next one runs (or for good, led elsewhere).
                }
            }

            var generation = await GenerationAsync(projection.Name, cancellationToken).ConfigureAwait(false);
            if (await CheckpointAsync(projection.Name, generation, cancellationToken).ConfigureAwait(false) >= position)
            {
                return;
            }

            await Task.Delay(RemoteWaitInterval, _time, cancellationToken).ConfigureAwait(false);
        }
    }

    internal static IEnumerable<Measurement<long>> Observe()
    {
        foreach (var manager in Active.Keys)
        {
            // While the store is unreachable the last lags would read as a healthy flat line: reported only while refreshed.
            if (!manager._lagFreshness.IsFresh())
            {
                continue;
            }

            foreach (var status in manager._latest)
            {
                yield return new Measurement<long>(status.Lag, new KeyValuePair<string, object?>(MetricNames.ProjectionTag, status.Name));
            }
        }
    }

    /// <summary>Runs every async projection while this node leads it, and refreshes the statuses, until <paramref name="stoppingToken"/>.</summary>
    internal async Task RunAsync(CancellationToken stoppingToken)
    {
        Active.TryAdd(this, 0);
        try
        {
            var runs = _projections.Values
                .Where(p => p.Mode == ProjectionMode.Async)
                .Select(p => _election.RunWhileLeadingAsync("projection:" + p.Name, token => LeadAsync(p, token), _options.RetryInterval, _time, _logger, stoppingToken))
                .Append(WatchAsync(stoppingToken))
                .ToArray();
            await Task.WhenAll(runs).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
        {
        }
        finally
        {
            Active.TryRemove(this, out _);
        }
    }

    internal static string CheckpointId(string projection, int generation) => generation == 1 ? projection : $"{projection}#g{generation}";

    /// <summary>The generation whose checkpoint id <see cref="CheckpointId"/> made <paramref name="checkpointId"/>, or null when it made none of <paramref name="projection"/>'s.</summary>
    internal static int? GenerationOf(string projection, string checkpointId)
    {
        if (checkpointId == projection)
        {
            return 1;
        }

        var suffix = checkpointId.AsSpan();
        return suffix.StartsWith(projection, StringComparison.Ordinal) && suffix[projection.Length..] is ['#', 'g', .. var digits]
            && int.TryParse(digits, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var generation)
            && generation > 1 && CheckpointId(projection, generation) == checkpointId
            ? generation
            : null;
    }

    internal static string GenerationKey(string projection) => "$projection-generation:" + projection;

    /// <summary>
    /// The checkpoint-store key of the leaders' fence: each leader's term in the high 32 bits (taken when it starts leading),
    /// a count of its guarded writes in the low ones. It only moves forward, so a write of an earlier leader conflicts.
    /// </summary>
    internal static string FenceKey(string projection) => "$projection-leader:" + projection;

    /// <summary>The checkpoint-store key of the latest generation a rebuild was started into (only forward).</summary>
    internal static string RebuildGenerationKey(string projection) => "$projection-rebuild-generation:" + projection;

    /// <summary>The checkpoint-store key of the latest rebuild another node asked for (a number that only grows).</summary>
    internal static string RebuildRequestKey(string projection) => "$projection-rebuild-requested:" + projection;

    /// <summary>The checkpoint-store key of the latest request the leader has answered (rebuilt, or failed to).</summary>
    internal static string RebuildAnsweredKey(string projection) => "$projection-rebuild-answered:" + projection;

    private ProjectionRuntime Get(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        return _projections.TryGetValue(name, out var projection)
            ? projection
            : throw new KeyNotFoundException($"No projection named '{name}' is registered; register it with AddProjection.");
    }

    private async ValueTask<ProjectionStatus> StatusAsync(ProjectionRuntime projection, long head, DateTimeOffset now, CancellationToken cancellationToken)
    {
        if (projection.Mode == ProjectionMode.Inline)
        {
            return new ProjectionStatus { Name = projection.Name, Mode = ProjectionMode.Inline, IsRunningHere = true, HeadPosition = head, TakenAt = now };
        }

        var live = projection.Live;
        var generation = live is not null ? projection.Generation : await GenerationAsync(projection.Name, cancellationToken).ConfigureAwait(false);
        var position = live?.Position ?? await CheckpointAsync(projection.Name, generation, cancellationToken).ConfigureAwait(false);
        var lag = Math.Max(0, head - position);
        var stalled = projection.Failure is not null || projection.IsStuck(position, lag, now, _options.StallAfter);
        return new ProjectionStatus
        {
            Name = projection.Name,
            Mode = ProjectionMode.Async,
            IsRunningHere = live is not null,
            Generation = generation,
            Position = position,
            HeadPosition = head,
            Lag = lag,
            IsStalled = stalled,
            LastError = projection.Failure,
            RebuildPosition = projection.Rebuild?.Position,
            TakenAt = now,
        };
    }

    /// <summary>The generation of <paramref name="projection"/> that serves reads, as stored by its last rebuild (1 before any).</summary>
    internal static async ValueTask<int> GenerationAsync(ICheckpointStore checkpoints, string projection, CancellationToken cancellationToken) =>
        (int)(await checkpoints.GetCheckpointAsync(GenerationKey(projection), cancellationToken).ConfigureAwait(false) ?? 1);

    private ValueTask<int> GenerationAsync(string projection, CancellationToken cancellationToken) => GenerationAsync(_checkpoints, projection, cancellationToken);

    // Where the stored checkpoint of a generation of the projection stands (0 before its first).
    private async ValueTask<long> CheckpointAsync(string projection, int generation, CancellationToken cancellationToken) =>
        await _checkpoints.GetCheckpointAsync(CheckpointId(projection, generation), cancellationToken).ConfigureAwait(false) ?? 0;

    private async Task WatchAsync(CancellationToken stoppingToken)
    {
        var reported = new HashSet<string>(StringComparer.Ordinal);
        while (!stoppingToken.IsCancellationRequested)
        {
            try
            {
                _lagFreshness.Refreshing();
                var statuses = await GetStatusAsync(stoppingToken).ConfigureAwait(false);
                _lagFreshness.Refreshed();
                foreach (var status in statuses)
                {
                    if (status.IsStalled && reported.Add(status.Name))
                    {
                        Log.ProjectionStalled(_logger, status.Name, status.Position ?? 0, status.Lag);
                    }
                    else if (!status.IsStalled)
                    {
                        reported.Remove(status.Name);
                    }
                }
            }
            catch (Exception ex) when (ex is not OperationCanceledException || !stoppingToken.IsCancellationRequested)
            {
                // The store is unreachable now; the runners report their own failures, and the next round tries again.
                Log.ProjectionStatusFailed(_logger, ex, _options.StatusInterval);
            }

            await Task.Delay(_options.StatusInterval, _time, stoppingToken).ConfigureAwait(false);
        }
    }

    private async Task LeadAsync(ProjectionRuntime projection, CancellationToken leading)
    {
        try
        {
            await RunLeaderAsync(projection, leading).ConfigureAwait(false);
        }
        finally
        {
            // This node runs it no more: its runner's failure describes nothing here now (another node may run it well),
            // and the rebuilds asked of it that it did not take are asked of the next leader.
            projection.Failure = null;
            projection.ReleaseRebuilds();
        }
    }

    private async Task RunLeaderAsync(ProjectionRuntime projection, CancellationToken leading)
    {
        // Before the generation is read: a rebuild of a leader that started before this one is refused from here on.
        projection.Fence = await LeaderFence.TakeAsync(_checkpoints, _runner, FenceKey(projection.Name), leading).ConfigureAwait(false);
        while (!leading.IsCancellationRequested)
        {
            // Read at every start, so a runner started again (after a failure, or a switch made elsewhere) runs the live one.
            var generation = await GenerationAsync(projection.Name, leading).ConfigureAwait(false);
            var live = await StartAsync(projection, generation, leading).ConfigureAwait(false);
            projection.Generation = generation;
            projection.Live = live;
            projection.Failure = null;
            Log.ProjectionStarted(_logger, projection.Name, live.Position, generation);
            try
            {
                var requested = projection.Rebuilds.Reader.WaitToReadAsync(leading).AsTask();
                while (true)
                {
                    // Requests of this node arrive on the channel; those of other nodes are looked for in the store.
                    using (var polling = CancellationTokenSource.CreateLinkedTokenSource(leading))
                    {
                        var poll = Task.Delay(_options.StatusInterval, _time, polling.Token);
                        await Task.WhenAny(live.Completion, requested, poll).ConfigureAwait(false);
                        await polling.CancelAsync().ConfigureAwait(false);
                    }

                    if (live.Completion.IsCompleted || leading.IsCancellationRequested)
                    {
                        break;
                    }

                    // An old leader that overlapped this one during a handover may have finished a rebuild: this runner
                    // would go on writing the retired generation while reads go to the new one. Follow the switch instead
                    // (a request waiting on the channel stays there for the runner of the new generation).
                    if (await SwitchedElsewhereAsync(projection.Name, generation, leading).ConfigureAwait(false) is { } switched)
                    {
                        Log.ProjectionGenerationSwitchedElsewhere(_logger, projection.Name, generation, switched);
                        break;
                    }

                    TaskCompletionSource<bool>? request = null;
                    var remote = 0L;
                    if (requested.IsCompleted)
                    {
                        projection.Rebuilds.Reader.TryRead(out request);
                        requested = projection.Rebuilds.Reader.WaitToReadAsync(leading).AsTask();
                    }

                    if (request is null && (remote = await RemoteRequestAsync(projection.Name, leading).ConfigureAwait(false)) == 0)
                    {
                        continue;
                    }

                    try
                    {
                        var (rebuilt, next) = await RebuildAsync(projection, live, generation, leading).ConfigureAwait(false);
                        await live.DisposeAsync().ConfigureAwait(false);
                        (live, generation) = (rebuilt, next);
                        projection.Live = live;
                        projection.Generation = generation;
                        request?.TrySetResult(true);
                    }
                    catch (Exception ex)
                    {
                        // A remote request's failure is logged here; its node learns of it from the unchanged generation.
                        if (request is null)
                        {
                            Log.ProjectionRebuildFailed(_logger, ex, projection.Name);
                        }

                        request?.TrySetException(ex);
                        if (leading.IsCancellationRequested)
                        {
                            throw;
                        }
                    }

                    if (remote > 0)
                    {
                        // Answered either way: the asking node compares the generation to tell a rebuild from a failure.
                        await AdvanceAsync(RebuildAnsweredKey(projection.Name), remote, leading).ConfigureAwait(false);
                    }
                }
            }
            finally
            {
                projection.Live = null;
                await live.DisposeAsync().ConfigureAwait(false);
            }

            if (live.Completion.IsFaulted && !leading.IsCancellationRequested)
            {
                var failure = live.Completion.Exception!.GetBaseException();

                // Its write was refused, a rebuild having switched reads since: no failure, it follows the switch at once.
                if (failure is ReadModelGenerationRetiredException
                    && await SwitchedElsewhereAsync(projection.Name, generation, leading).ConfigureAwait(false) is { } switched)
                {
                    Log.ProjectionGenerationSwitchedElsewhere(_logger, projection.Name, generation, switched);
                    continue;
                }

                projection.Failure = failure.Message;
                Log.ProjectionFailed(_logger, failure, projection.Name, _options.RetryInterval);
                await RetryWaits.DelayAsync(projection.Name, _options.RetryInterval, _time, leading).ConfigureAwait(false);
            }
        }
    }

    private async Task<EventSubscription> StartAsync(ProjectionRuntime projection, int generation, CancellationToken cancellationToken)
    {
        var checkpointId = CheckpointId(projection.Name, generation);
        var options = new EventSubscriptionOptions
        {
            SubscriptionId = checkpointId,
            Filter = EventFilter.ForEventTypes([.. projection.Projection.EventTypes.Select(_pipelines.TypeName)]),
            BatchSize = _options.BatchSize,
            DeadLetterUnreadableEventsTo = projection.Projection.DeadLetterUnreadableEvents ? _pipelines.DeadLetters : null,
        };
        var subscription = _pipelines.CreateSubscription(
            _events,
            _checkpoints,
            options,
            next => new ProjectionStep(checkpointId, generation, _checkpoints, next),
            ProjectionInvoker.Handlers(projection.Projection, _readModels),
            DeadLetterOrigin.Projection,
            (position, token) => SaveForwardAsync(checkpointId, position, token),
            new SubscriptionBatching(
                _options.CommitEvery,
                next => new ProjectionBatchStep(generation, next),
                (first, last, unitOfWork, token) => ProjectionStep.CheckpointBatchAsync(_checkpoints, checkpointId, first, last, unitOfWork, token)),
            // Every generation's chain goes by the projection's name, not its checkpoint's ("{name}#g2"): a rebuilt
            // projection keeps the retry policy configured for it, and files its dead letters under its name.
            endpoint: projection.Name,
            retryWaits: RetryWaits);
        await subscription.StartAsync(cancellationToken).ConfigureAwait(false);
        return subscription;
    }

    // Asks the leader to rebuild: a request number above every earlier one, then waits for the leader's answer.
    private async Task RequestRebuildAsync(string name, CancellationToken cancellationToken)
    {
        var before = await GenerationAsync(name, cancellationToken).ConfigureAwait(false);
        var key = RebuildRequestKey(name);
        long request;
        do
        {
            var stored = await _checkpoints.GetCheckpointAsync(key, cancellationToken).ConfigureAwait(false) ?? 0;
            request = Math.Max(stored + 1, _time.GetUtcNow().UtcTicks);
        }
        while (!await AdvanceAsync(key, request, cancellationToken).ConfigureAwait(false));

        Log.ProjectionRebuildRequested(_logger, name, request);
        while (true)
        {
            var answered = await _checkpoints.GetCheckpointAsync(RebuildAnsweredKey(name), cancellationToken).ConfigureAwait(false) ?? 0;
            if (answered >= request)
            {
                var after = await GenerationAsync(name, cancellationToken).ConfigureAwait(false);
                if (after > before)
                {
                    return;
                }

                throw new InvalidOperationException($"The node that leads projection '{name}' could not rebuild it (its log says why); generation {after} still serves.");
            }

            await Task.Delay(_options.StatusInterval, _time, cancellationToken).ConfigureAwait(false);
        }
    }

    // A rebuild another node asked for and this leader has not answered yet, or 0. A store that cannot answer now is asked
    // again at the next look.
    private async ValueTask<long> RemoteRequestAsync(string name, CancellationToken cancellationToken)
    {
        try
        {
            var requested = await _checkpoints.GetCheckpointAsync(RebuildRequestKey(name), cancellationToken).ConfigureAwait(false) ?? 0;
            if (requested == 0)
            {
                return 0;
            }

            var answered = await _checkpoints.GetCheckpointAsync(RebuildAnsweredKey(name), cancellationToken).ConfigureAwait(false) ?? 0;
            return requested > answered ? requested : 0;
        }
        catch (Exception ex) when (ex is not OperationCanceledException || !cancellationToken.IsCancellationRequested)
        {
            Log.ProjectionStatusFailed(_logger, ex, _options.StatusInterval);
            return 0;
        }
    }

    // The generation that serves reads when it is not the one this node's runner writes, or null (also when the store
    // cannot answer now: the next look asks again).
    private async ValueTask<int?> SwitchedElsewhereAsync(string name, int generation, CancellationToken cancellationToken)
    {
        try
        {
            var stored = await GenerationAsync(name, cancellationToken).ConfigureAwait(false);
            return stored != generation ? stored : null;
        }
        catch (Exception ex) when (ex is not OperationCanceledException || !cancellationToken.IsCancellationRequested)
        {
            Log.ProjectionStatusFailed(_logger, ex, _options.StatusInterval);
            return null;
        }
    }

    // Runs work in a unit of work that also writes the fence, so it commits only while no leader took a term after this
    // one: the leadership lease cannot say so itself, since another node may hold it before this one notices the loss (a
    // killed session is seen at the next keep-alive).
    private static ValueTask FencedAsync(ProjectionRuntime projection, Func<IUnitOfWork, CancellationToken, ValueTask> work, CancellationToken cancellationToken) =>
        projection.Fence!.RunAsync(
            (services, token) => work(services.GetRequiredService<IUnitOfWork>(), token),
            $"Another node started leading projection '{projection.Name}' after this one did; this node's rebuild is refused, and the generation it would replace still serves.",
            cancellationToken);

    // Stores value under key only forward; false when the stored value is at or past it already.
    private ValueTask<bool> AdvanceAsync(string key, long value, CancellationToken cancellationToken) =>
        ForwardCheckpoint.TryAdvanceAsync(_checkpoints, _runner, key, value, cancellationToken);

    // The loop's own checkpoint writes (past events its filter skipped) only ever move forward: a runner that lost its
    // leadership must not move back a checkpoint its successor advanced (which then keeps it).
    private async ValueTask SaveForwardAsync(string checkpointId, long position, CancellationToken cancellationToken) =>
        await AdvanceAsync(checkpointId, position, cancellationToken).ConfigureAwait(false);

    // Returns the new runner and its generation: past every one a rebuild was started into, so not always generation + 1.
    private async Task<(EventSubscription Runner, int Generation)> RebuildAsync(ProjectionRuntime projection, EventSubscription live, int generation, CancellationToken leading)
    {
        // A generation a rebuild was started into may still be written by that rebuild (a supplanted leader's, until it
        // notices): this one takes a generation past every such one, so neither resets nor fills the other's.
        var started = RebuildGenerationKey(projection.Name);
        var next = (int)Math.Max(generation, await _checkpoints.GetCheckpointAsync(started, leading).ConfigureAwait(false) ?? 0) + 1;
        Log.ProjectionRebuildStarted(_logger, projection.Name, next);

        // The resets below cannot join a unit of work (DDL; a checkpoint moved back): the fence is confirmed just before
        // them, with the generation taken, so a leader supplanted by then leaves the new leader's generations alone.
        await FencedAsync(projection, (unitOfWork, token) => _checkpoints.SetCheckpointAsync(started, next, unitOfWork, token), leading).ConfigureAwait(false);
        foreach (var table in projection.Projection.Tables)
        {
            await _readModels.ResetGenerationAsync(table, next, leading).ConfigureAwait(false);
        }

        // A rebuild that failed before left its checkpoint behind: start the new generation from the beginning.
        await _checkpoints.SetCheckpointAsync(CheckpointId(projection.Name, next), 0, leading).ConfigureAwait(false);
        var rebuild = await StartAsync(projection, next, leading).ConfigureAwait(false);
        projection.Rebuild = rebuild;
        try
        {
            // Catch up while the live generation keeps serving, then stop it and let the new one pass where it stopped.
            var head = await _events.GetLastPositionAsync(leading).ConfigureAwait(false);
            await WaitAsync(rebuild, head, leading).ConfigureAwait(false);
            await live.StopAsync(leading).ConfigureAwait(false);
            await WaitAsync(rebuild, live.Position, leading).ConfigureAwait(false);

            await FencedAsync(
                projection,
                async (unitOfWork, token) =>
                {
                    await _checkpoints.SetCheckpointAsync(GenerationKey(projection.Name), next, unitOfWork, token).ConfigureAwait(false);
                    foreach (var table in projection.Projection.Tables)
                    {
                        await _readModels.ActivateGenerationAsync(table, next, unitOfWork, token).ConfigureAwait(false);
                    }
                },
                leading).ConfigureAwait(false);
        }
        catch
        {
            projection.Rebuild = null;
            await rebuild.DisposeAsync().ConfigureAwait(false);
            throw;
        }

        projection.Rebuild = null;
        Log.ProjectionRebuilt(_logger, projection.Name, next, rebuild.Position);

        // The old generation, and those of rebuilds that did not finish: retired now, so no runner can make them again.
        for (var retired = generation; retired < next; retired++)
        {
            foreach (var table in projection.Projection.Tables)
            {
                try
                {
                    await _readModels.DropGenerationAsync(table, retired, leading).ConfigureAwait(false);
                }
                catch (Exception ex) when (ex is not OperationCanceledException)
                {
                    Log.ProjectionDropFailed(_logger, ex, projection.Name, retired, table);
                }
            }
        }

        return (rebuild, next);
    }

    private static async Task WaitAsync(EventSubscription subscription, long position, CancellationToken cancellationToken)
    {
        // WaitForPositionAsync faults when the subscription fails, so a rebuild that breaks surfaces here.
        await subscription.WaitForPositionAsync(position, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>One registered projection and what its runner on this node is doing.</summary>
    private sealed class ProjectionRuntime(Projection projection, ProjectionMode mode)
    {
        private readonly Lock _observed = new();
        private readonly Lock _leading = new();
        private long _observedPosition = -1;
        private DateTimeOffset _observedAt;

        public Projection Projection => projection;

        public string Name => projection.Name;

        public ProjectionMode Mode => mode;

        /// <summary>Rebuilds asked on this node while it leads; each completes with true once done, false when left to the next leader.</summary>
        public Channel<TaskCompletionSource<bool>> Rebuilds { get; } = Channel.CreateUnbounded<TaskCompletionSource<bool>>();

        public volatile EventSubscription? Live;

        public volatile EventSubscription? Rebuild;

        public volatile string? Failure;

        public int Generation { get; set; } = 1;

        /// <summary>This node's leadership's term under <see cref="FenceKey"/> (only its lead loop uses it).</summary>
        public LeaderFence? Fence { get; set; }

        /// <summary>Queues a rebuild for this node's leadership; null when this node does not run the projection.</summary>
        public TaskCompletionSource<bool>? QueueRebuild()
        {
            // Under the lock ReleaseRebuilds takes, so no request is queued after the last leadership's release.
            lock (_leading)
            {
                if (Live is null)
                {
                    return null;
                }

                var request = new TaskCompletionSource<bool>(TaskCreationOptions.RunContinuationsAsynchronously);
                Rebuilds.Writer.TryWrite(request);
                return request;
            }
        }

        /// <summary>Once this node stops leading: the rebuilds it did not take complete with false (ask the next leader).</summary>
        public void ReleaseRebuilds()
        {
            lock (_leading)
            {
                Live = null;
                while (Rebuilds.Reader.TryRead(out var request))
                {
                    request.TrySetResult(false);
                }
            }
        }

        /// <summary>Behind the head and not moved since the first look for longer than <paramref name="stallAfter"/>.</summary>
        public bool IsStuck(long position, long lag, DateTimeOffset now, TimeSpan stallAfter)
        {
            lock (_observed)
            {
                if (position != _observedPosition || lag == 0)
                {
                    (_observedPosition, _observedAt) = (position, now);
                    return false;
                }

                return now - _observedAt >= stallAfter;
            }
        }
    }
}

/// <summary>A projection registered with <c>AddProjection</c>.</summary>
internal sealed record ProjectionRegistration(Projection Projection, ProjectionMode Mode);
