using Herald.Hosting;
using Herald.Persistence;
using Herald.Reliability.Retry;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Herald.Sagas;

/// <summary>
/// Runs orchestrated sagas. Each step runs in a unit of work of its own that also saves the instance's progress, so a
/// step's writes (outbox messages, appends, the application's rows) and "this step is done" commit together: after a
/// crash the step either happened and is recorded, or runs again. When a step fails after its retries, the completed
/// steps are compensated in reverse order, each compensation committed with the instance's progress too; a compensation
/// that keeps failing parks the instance as <see cref="SagaStatus.Failed"/>, visible in the store, never dropped.
/// </summary>
/// <remarks>
/// Two processes may run one instance (a resume racing a live run): each save checks the version, so the one that
/// falls behind gets a <see cref="SagaConcurrencyException"/> at its step's commit, its step's writes roll back, and it
/// stops, leaving the instance to the other.
/// </remarks>
public sealed class SagaOrchestrator
{
    // Begins the compensation failure a park adds to the error (see Cause).
    private const string CompensationFailed = " Compensation of step '";
    private readonly ISagaStore _store;
    private readonly UnitOfWorkRunner _runner;
    private readonly TimeProvider _timeProvider;
    private readonly ILogger _logger;
    private readonly System.Collections.Concurrent.ConcurrentDictionary<(string Saga, string Id), byte> _running = new();

    /// <summary>Creates an orchestrator over <paramref name="store"/>, running steps in scopes of <paramref name="runner"/>.</summary>
    public SagaOrchestrator(ISagaStore store, UnitOfWorkRunner runner, TimeProvider? timeProvider = null, ILogger<SagaOrchestrator>? logger = null)
    {
        ArgumentNullException.ThrowIfNull(store);
        ArgumentNullException.ThrowIfNull(runner);
        _store = store;
        _runner = runner;
        _timeProvider = timeProvider ?? TimeProvider.System;
        _logger = (ILogger?)logger ?? NullLogger.Instance;
    }

    /// <summary>The host's runner of instances started in a unit of work; set when the host builds it (<c>AddSaga</c>).</summary>
    internal SagaRunQueue? Queue { get; set; }

    /// <summary>
    /// With a store several processes share, <see cref="SagaOptions.StaleAfter"/>: how long an instance may go without a
    /// save before another node's sweep takes it over, so a running step renews it within that (<see cref="SagaLease"/>).
    /// Null with a single-process store, whose sweep never takes over an instance this process runs.
    /// </summary>
    internal TimeSpan? StaleAfter { get; init; }

    /// <summary>The runs under way in this process, for the test harness's idleness.</summary>
    internal SagaActivity Activity { get; } = new();

    /// <summary>Whether this process runs the instance now (a start or a resume in flight).</summary>
    internal bool IsRunningHere(string sagaType, string id) => _running.ContainsKey((sagaType, id));

    /// <summary>
    /// Saves a new instance of <paramref name="definition"/> with <paramref name="data"/> and runs it until it completes,
    /// is compensated or is parked as failed. Returns the instance as it ended.
    /// </summary>
    /// <exception cref="SagaConcurrencyException">An instance with this id already exists.</exception>
    public async Task<SagaInstance> StartAsync<TData>(SagaDefinition<TData> definition, string id, TData data, CancellationToken cancellationToken = default)
        where TData : class
    {
        ArgumentNullException.ThrowIfNull(definition);
        ArgumentNullException.ThrowIfNull(data);
        var instance = NewInstance(definition, id, data);
        // Claimed in this process before it is saved, so the start-up resume never runs it beside this call.
        var key = (definition.Name, id);
        if (!_running.TryAdd(key, 0))
        {
            throw new SagaConcurrencyException(definition.Name, id, expectedVersion: 0, actualVersion: null);
        }

        Activity.Started();
        try
        {
            var version = await _store.SaveAsync(instance, cancellationToken).ConfigureAwait(false);
            Log.SagaStarted(_logger, definition.Name, id);
            return await RunAsync(definition, instance with { Version = version }, cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            _running.TryRemove(key, out _);
            Activity.Ended();
        }
    }

    /// <summary>
    /// Starts an instance as part of <paramref name="unitOfWork"/> (a message handler's, say): enlists the save of the new
    /// instance there and, once it commits, runs the instance in the background on the host's saga runner (at most
    /// <see cref="SagaOptions.RunConcurrency"/> at once), so the caller's transaction stays short and the start is recorded
    /// exactly when the caller's own writes (and its inbox mark) are. If the process stops before the instance ran, the
    /// resume sweep runs it. Returns false, and enlists nothing, when an instance with this id is stored already (a message
    /// delivered again); two starts racing for one id conflict at the commit with a <see cref="SagaConcurrencyException"/>,
    /// and the retried message then finds the instance.
    /// </summary>
    /// <exception cref="InvalidOperationException">No host runs sagas here: register the saga with <c>AddSaga</c> and start the host.</exception>
    public async ValueTask<bool> StartInAsync<TData>(SagaDefinition<TData> definition, string id, TData data, IUnitOfWork unitOfWork, CancellationToken cancellationToken = default)
        where TData : class
    {
        ArgumentNullException.ThrowIfNull(definition);
        ArgumentException.ThrowIfNullOrWhiteSpace(id);
        ArgumentNullException.ThrowIfNull(data);
        ArgumentNullException.ThrowIfNull(unitOfWork);
        var queue = Queue ?? throw new InvalidOperationException(
            $"StartInAsync runs saga '{definition.Name}' on the host's saga runner: register the saga with AddSaga and start the host, or call StartAsync.");
        if (await _store.LoadAsync(definition.Name, id, cancellationToken).ConfigureAwait(false) is not null)
        {
            return false;
        }

        var instance = NewInstance(definition, id, data);
        await _store.SaveAsync(instance, unitOfWork, cancellationToken).ConfigureAwait(false);
        var parent = System.Diagnostics.Activity.Current?.Context ?? default;
        // The queued run claims the instance at the version the commit gave it, in place of loading it: the run may wait
        // in the queue past StaleAfter, and a sweep elsewhere that took the instance meanwhile then keeps it alone.
        var committed = instance with { Version = 1 };
        unitOfWork.OnCommitted(token =>
        {
            Log.SagaStarted(_logger, definition.Name, id);
            return queue.EnqueueAsync(definition.Name, id, parent, run => ResumeListedAsync(definition, committed, run), token);
        });
        return true;
    }

    /// <summary>
    /// Loads an instance and runs it on from where it stood (the step it was at, or the compensations still due), claiming
    /// it first by a save of the version loaded. A finished instance is returned as it is, and one that another runner
    /// moved on between the load and the claim is returned as stored then, not run here; so is one saved within
    /// <see cref="SagaOptions.StaleAfter"/> on a store processes share, which another node may be running (the resume sweep
    /// takes it once it goes that long without a save). Null when none is stored.
    /// </summary>
    public Task<SagaInstance?> ResumeAsync<TData>(SagaDefinition<TData> definition, string id, CancellationToken cancellationToken = default)
        where TData : class =>
        ResumeCoreAsync(definition, id, Parked.Left, listed: null, cancellationToken);

    /// <summary>
    /// The resume of an instance at a version known without a load (the resume sweep's listed as undriven, a queued start's
    /// as committed): claimed first by a save of that version, so a resume that finds it moved on since (a runner saved
    /// progress, a sweep claimed it) leaves it, and null is returned.
    /// </summary>
    internal Task<SagaInstance?> ResumeListedAsync<TData>(SagaDefinition<TData> definition, SagaInstance listed, CancellationToken cancellationToken)
        where TData : class =>
        ResumeCoreAsync(definition, listed.Id, Parked.Left, listed, cancellationToken);

    /// <summary>
    /// Runs a parked (<see cref="SagaStatus.Failed"/>) instance again once its cause is fixed: it turns
    /// <see cref="SagaStatus.Compensating"/> and the compensations still due run, from the one that failed. Any other
    /// finished instance is returned as it is, and an unfinished one is claimed and run on as by
    /// <see cref="ResumeAsync{TData}"/>; null when none is stored.
    /// </summary>
    /// <exception cref="SagaConcurrencyException">The instance changed meanwhile (another call resumed it): load it and look again.</exception>
    public Task<SagaInstance?> ResumeParkedAsync<TData>(SagaDefinition<TData> definition, string id, CancellationToken cancellationToken = default)
        where TData : class =>
        ResumeCoreAsync(definition, id, Parked.Compensated, listed: null, cancellationToken);

    /// <summary>
    /// Runs a parked (<see cref="SagaStatus.Failed"/>) instance forward again once its cause is fixed (its data reads again,
    /// a downstream service is back): it turns <see cref="SagaStatus.Running"/> at the step after the last one still
    /// completed (the step it parked at, or the one whose failure it was compensating), and runs on from there, retried and
    /// compensated as any run. Steps already compensated run again. Any other finished instance is returned as it is, and an
    /// unfinished one is claimed and run on as by <see cref="ResumeAsync{TData}"/>; null when none is stored.
    /// <see cref="ResumeParkedAsync{TData}"/> compensates instead.
    /// </summary>
    /// <exception cref="SagaConcurrencyException">The instance changed meanwhile (another call resumed it): load it and look again.</exception>
    public Task<SagaInstance?> RetryParkedAsync<TData>(SagaDefinition<TData> definition, string id, CancellationToken cancellationToken = default)
        where TData : class =>
        ResumeCoreAsync(definition, id, Parked.RunForward, listed: null, cancellationToken);

    private async Task<SagaInstance?> ResumeCoreAsync<TData>(SagaDefinition<TData> definition, string id, Parked parked, SagaInstance? listed, CancellationToken cancellationToken)
        where TData : class
    {
        ArgumentNullException.ThrowIfNull(definition);
        var key = (definition.Name, id);
        if (!_running.TryAdd(key, 0))
        {
            // This process runs it already (a StartAsync in flight): one runner per instance here.
            return await _store.LoadAsync(definition.Name, id, cancellationToken).ConfigureAwait(false);
        }

        // Before the first await: the saga runner hands its count of a queued run over to this one when the call returns.
        Activity.Started();
        try
        {
            var instance = listed is null ? await _store.LoadAsync(definition.Name, id, cancellationToken).ConfigureAwait(false) : await ClaimAsync(listed, cancellationToken).ConfigureAwait(false);
            if (parked != Parked.Left && instance?.Status == SagaStatus.Failed)
            {
                // Nothing runs a parked instance, and nothing else would ever undo its completed steps or run its next one.
                // Saved first (with the version check, which claims it too), so a crash from here leaves it compensating or
                // running, where the resume sweep finds it.
                instance = await SaveDirectAsync(
                    parked == Parked.Compensated ? instance with { Status = SagaStatus.Compensating } : Forward(definition, instance),
                    cancellationToken).ConfigureAwait(false);
            }
            else if (listed is null && instance is { IsFinished: false } loaded)
            {
                // On a shared store, one saved within StaleAfter may be another node's live run (its renewals keep it so):
                // left to its runner, as the sweep leaves it, and returned as stored.
                if (StaleAfter is { } staleAfter && loaded.UpdatedAt > _timeProvider.GetUtcNow() - staleAfter)
                {
                    Log.SagaResumeLeftLive(_logger, definition.Name, id, loaded.UpdatedAt);
                    return loaded;
                }

                // Claimed as the sweep claims what it listed: a stale instance is renewed only a third of StaleAfter into
                // its step, and a sweep elsewhere would take it and run the step meanwhile. Lost, it is the other runner's.
                instance = await ClaimAsync(loaded, cancellationToken).ConfigureAwait(false);
                if (instance is null)
                {
                    return await _store.LoadAsync(definition.Name, id, cancellationToken).ConfigureAwait(false);
                }
            }

            if (instance is null || instance.IsFinished)
            {
                return instance;
            }

            Log.SagaResumed(_logger, definition.Name, id, instance.Status, instance.State);
            return await RunAsync(definition, instance, cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            _running.TryRemove(key, out _);
            Activity.Ended();
        }
    }

    private async Task<SagaInstance> RunAsync<TData>(SagaDefinition<TData> definition, SagaInstance instance, CancellationToken cancellationToken)
        where TData : class
    {
        try
        {
            while (instance.Status == SagaStatus.Running)
            {
                // The step it stopped at, found by name: under a definition changed since (a step added or removed before
                // it), its index would run a completed step again or skip this one. Only an instance saved without a step
                // name goes by the index.
                var index = instance.State is { } at ? definition.IndexOf(at) : instance.CurrentStep < definition.Steps.Count ? instance.CurrentStep : -1;
                if (index < 0)
                {
                    return await ParkAsync(instance, $"Step '{instance.State}' is not in the saga's definition; it cannot be resumed.", cancellationToken).ConfigureAwait(false);
                }

                var step = definition.Steps[index];
                instance = instance with { CurrentStep = index };
                // On a failure too, the instance as stored now: the step's renewals moved its version on.
                (instance, var failure) = await RunStepAsync(definition, instance, step, compensation: false, cancellationToken).ConfigureAwait(false);
                if (failure is null)
                {
                    continue;
                }

                if (failure is SagaDataUnreadableException)
                {
                    // Nothing failed but this code's reading of the data: compensating would end an instance at its first
                    // step as Compensated, undone though nothing was done, and no compensation can read the data either.
                    return await ParkAsync(instance, failure.Message, cancellationToken).ConfigureAwait(false);
                }

                Log.SagaStepFailed(_logger, failure, definition.Name, instance.Id, step.Name);
                instance = await SaveDirectAsync(instance with
                {
                    Status = SagaStatus.Compensating,
                    Error = $"Step '{step.Name}' failed: {Describe(failure)}",
                }, cancellationToken).ConfigureAwait(false);
            }

            while (instance.Status == SagaStatus.Compensating && instance.CompletedSteps.Count > 0)
            {
                var index = definition.IndexOf(instance.CompletedSteps[^1]);
                if (index < 0)
                {
                    // The definition changed under a stored instance; it cannot be undone by this code.
                    return await ParkAsync(instance, $"Completed step '{instance.CompletedSteps[^1]}' is not in the saga's definition; it cannot be compensated.", cancellationToken).ConfigureAwait(false);
                }

                var step = definition.Steps[index];
                (instance, var failure) = await RunStepAsync(definition, instance, step, compensation: true, cancellationToken).ConfigureAwait(false);
                if (failure is not null)
                {
                    Log.SagaCompensationFailed(_logger, failure, definition.Name, instance.Id, step.Name);
                    return await ParkAsync(instance, $"{Cause(instance.Error)}{CompensationFailed}{step.Name}' failed: {Describe(failure)}", cancellationToken).ConfigureAwait(false);
                }
            }

            if (instance.Status == SagaStatus.Compensating)
            {
                instance = await SaveDirectAsync(instance with { Status = SagaStatus.Compensated, State = null }, cancellationToken).ConfigureAwait(false);
            }

            Log.SagaEnded(_logger, definition.Name, instance.Id, instance.Status);
            return instance;
        }
        catch (Exception conflict) when (conflict is SagaConcurrencyException or LeaseLostException)
        {
            // Someone else moved the instance on (or may now: its lease ran out while a step ran): it is theirs.
            Log.SagaTakenOver(_logger, conflict, definition.Name, instance.Id);
            return await _store.LoadAsync(definition.Name, instance.Id, CancellationToken.None).ConfigureAwait(false) ?? instance;
        }
    }

    // Runs a step (or its compensation) with its retries, renewing the instance's freshness meanwhile on a shared store.
    // Returns the saved instance, or the instance as stored now (renewed) with the failure once retries are spent.
    private async Task<(SagaInstance Next, Exception? Failure)> RunStepAsync<TData>(
        SagaDefinition<TData> definition,
        SagaInstance instance,
        SagaStep<TData> step,
        bool compensation,
        CancellationToken cancellationToken)
        where TData : class
    {
        var lease = StaleAfter is { } staleAfter ? new SagaLease(_store, instance, staleAfter, _timeProvider, _logger) : null;
        (SagaInstance? Next, Exception? Failure) outcome;
        try
        {
            outcome = await RunStepCoreAsync(definition, instance, step, compensation, lease, cancellationToken).ConfigureAwait(false);
        }
        finally
        {
            if (lease is not null)
            {
                await lease.DisposeAsync().ConfigureAwait(false);
            }
        }

        return (outcome.Next ?? lease?.Instance ?? instance, outcome.Failure);
    }

    private async Task<(SagaInstance? Next, Exception? Failure)> RunStepCoreAsync<TData>(
        SagaDefinition<TData> definition,
        SagaInstance instance,
        SagaStep<TData> step,
        bool compensation,
        SagaLease? lease,
        CancellationToken cancellationToken)
        where TData : class
    {
        var attempt = 1;
        var delayedRetries = 0;
        while (true)
        {
            Exception failure;
            try
            {
                return (await RunOnceAsync(definition, instance, step, compensation, attempt, lease, cancellationToken).ConfigureAwait(false), null);
            }
            catch (SagaConcurrencyException conflict) when (conflict.SagaType == definition.Name && conflict.Id == instance.Id)
            {
                // This instance moved on under us: it is the other runner's now. A conflict on another saga's instance the
                // step wrote (a child it starts, a timeout it cancels) is the step's failure, retried by its policy.
                throw;
            }
            catch (Exception) when (lease?.IsLost == true)
            {
                // Its renewal found it taken (or it ran out): the step was cancelled, and is nobody's failure to retry.
                await lease.StopAsync().ConfigureAwait(false);
                throw;
            }
            catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
            {
                // Shutdown: nothing of this run committed; the instance stays where it was and is resumed later.
                throw;
            }
            catch (SagaDataUnreadableException unreadable)
            {
                // Reads the same on every attempt: no retry can help.
                return (null, unreadable);
            }
#pragma warning disable CA1031 // A step's failure is the saga's business: retried, then compensated, never thrown to the caller.
            catch (Exception ex)
#pragma warning restore CA1031
            {
                failure = ex;
            }

            var decision = step.Retry.Decide(failure, attempt, Random.Shared);
            switch (decision.Action)
            {
                case RetryAction.RetryImmediately:
                    attempt++;
                    continue;
                case RetryAction.Redeliver:
                    delayedRetries++;
                    Log.SagaStepRetrying(_logger, failure, definition.Name, instance.Id, step.Name, compensation, attempt, decision.Delay);
                    // The timer first, then its time noted (for Herald.Testing's fake clock): noted first, a test could move the
                    // clock to that time before the timer existed, and the timer would then fire a delay later.
                    // Renewed while it waits too: a back-off is as much this runner's as the step.
                    var timer = Task.Delay(decision.Delay, _timeProvider, lease?.Start(cancellationToken) ?? cancellationToken);
                    var until = _timeProvider.GetUtcNow() + decision.Delay;
                    Activity.Waiting(until);
                    try
                    {
                        await timer.ConfigureAwait(false);
                    }
                    catch (OperationCanceledException) when (lease?.IsLost == true)
                    {
                        await lease.StopAsync().ConfigureAwait(false);
                        throw;
                    }
                    finally
                    {
                        Activity.Woke(until);
                    }

                    attempt++;
                    continue;
                default:
                    return (null, failure);
            }
        }
    }

    private async Task<SagaInstance> RunOnceAsync<TData>(
        SagaDefinition<TData> definition,
        SagaInstance instance,
        SagaStep<TData> step,
        bool compensation,
        int attempt,
        SagaLease? lease,
        CancellationToken cancellationToken)
        where TData : class
    {
        // The renewal's timer is scheduled here, before the step runs.
        var leased = lease?.Start(cancellationToken);
        using var timeout = step.Timeout is { } limit ? new CancellationTokenSource(limit, _timeProvider) : null;
        using var linked = timeout is null ? null : CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, timeout.Token);
        var token = linked?.Token ?? cancellationToken;

        // The step's token fires too when the instance is found taken; the commit's does not follow the lease, whose
        // source is gone once renewals stop.
        using var stepLinked = leased is { } held ? CancellationTokenSource.CreateLinkedTokenSource(token, held) : null;
        var stepToken = stepLinked?.Token ?? token;
        try
        {
            return await _runner.RunAsync(
                async (services, _) =>
                {
                    var context = new SagaStepContext<TData>(definition.Name, instance.Id, step.Name, compensation, attempt, SagaData.Read<TData>(instance), services, stepToken);
                    if (compensation)
                    {
                        // A step without a compensation has nothing to undo: its turn only records the progress, so the
                        // compensations of the steps before it still run.
                        if (step.Compensate is { } compensate)
                        {
                            await compensate(context).ConfigureAwait(false);
                        }
                    }
                    else
                    {
                        await step.Execute(context).ConfigureAwait(false);
                    }

                    // Renewals stop before the save is enlisted, which then names the version they left: this runner's own
                    // renewals never make its commit conflict, and one that found the instance taken refuses it here.
                    var current = lease is null ? instance : await lease.StopAsync().ConfigureAwait(false);
                    var next = compensation ? Compensated(definition, current, context.Data) : Completed(definition, current, step, context.Data);
                    await _store.SaveAsync(next, services.GetRequiredService<IUnitOfWork>(), token).ConfigureAwait(false);
                    return next with { Version = current.Version + 1 };
                },
                metadata: null,
                token).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (timeout?.IsCancellationRequested == true && !cancellationToken.IsCancellationRequested)
        {
            throw new TimeoutException($"Step '{step.Name}'{(compensation ? " (compensation)" : string.Empty)} did not finish within {step.Timeout}.");
        }
    }

    private static SagaInstance Completed<TData>(SagaDefinition<TData> definition, SagaInstance instance, SagaStep<TData> step, TData data)
        where TData : class
    {
        var next = instance.CurrentStep + 1;
        var done = next >= definition.Steps.Count;
        return instance with
        {
            CurrentStep = next,
            CompletedSteps = [.. instance.CompletedSteps, step.Name],
            State = done ? null : definition.Steps[next].Name,
            Status = done ? SagaStatus.Completed : SagaStatus.Running,
            Data = SagaData.Serialize(data),
        };
    }

    // A compensated step leaves the completed list, so a resume compensates only what is still done.
    private static SagaInstance Compensated<TData>(SagaDefinition<TData> definition, SagaInstance instance, TData data)
        where TData : class
    {
        var remaining = instance.CompletedSteps.Take(instance.CompletedSteps.Count - 1).ToArray();
        return instance with
        {
            CompletedSteps = remaining,
            CurrentStep = remaining.Length,
            State = remaining.Length > 0 ? remaining[^1] : null,
            Data = SagaData.Serialize(data),
        };
    }

    // A parked instance set to run on from the step after the last one still completed; one whose last completed step the
    // definition lost stays parked, with that reason.
    private static SagaInstance Forward<TData>(SagaDefinition<TData> definition, SagaInstance instance)
        where TData : class
    {
        var next = instance.CompletedSteps.Count == 0 ? 0 : definition.IndexOf(instance.CompletedSteps[^1]) + 1;
        if (next == 0 && instance.CompletedSteps.Count > 0)
        {
            return instance with { Error = $"Completed step '{instance.CompletedSteps[^1]}' is not in the saga's definition; it cannot be resumed." };
        }

        var done = next >= definition.Steps.Count;
        return instance with
        {
            Status = done ? SagaStatus.Completed : SagaStatus.Running,
            State = done ? null : definition.Steps[next].Name,
            CurrentStep = next,
            Error = null,
        };
    }

    private async Task<SagaInstance> ParkAsync(SagaInstance instance, string error, CancellationToken cancellationToken)
    {
        var parked = await SaveDirectAsync(instance with { Status = SagaStatus.Failed, Error = error }, cancellationToken).ConfigureAwait(false);
        Log.SagaParked(_logger, instance.SagaType, instance.Id, error);
        return parked;
    }

    // A save of the instance as listed: it fails when the instance moved on since, and stamps it as saved now.
    private async Task<SagaInstance?> ClaimAsync(SagaInstance listed, CancellationToken cancellationToken)
    {
        try
        {
            return await SaveDirectAsync(listed, cancellationToken).ConfigureAwait(false);
        }
        catch (SagaConcurrencyException conflict) when (conflict.SagaType == listed.SagaType && conflict.Id == listed.Id)
        {
            Log.SagaTakenOver(_logger, conflict, listed.SagaType, listed.Id);
            return null;
        }
    }

    private async Task<SagaInstance> SaveDirectAsync(SagaInstance instance, CancellationToken cancellationToken)
    {
        var version = await _store.SaveAsync(instance, cancellationToken).ConfigureAwait(false);
        return instance with { Version = version };
    }

    private static string Describe(Exception exception) => $"{exception.GetType().Name}: {exception.Message}";

    /// <summary>
    /// What made the saga compensate, without the compensation failure of an earlier park: a parked instance resumed by
    /// <see cref="ResumeParkedAsync{TData}"/> keeps its error, and a park appending to it grew by one failure per cycle.
    /// Cut at the first such failure, so the error stays bounded even if an exception's message repeats the words.
    /// </summary>
    private static string? Cause(string? error) =>
        error?.IndexOf(CompensationFailed, StringComparison.Ordinal) is { } at and >= 0 ? error[..at] : error;

    // What a resume does with a parked instance: leaves it parked, compensates it, or runs it forward.
    private enum Parked
    {
        Left,
        Compensated,
        RunForward,
    }

    /// <summary>A new instance of <paramref name="definition"/>, running, at its first step, holding <paramref name="data"/>.</summary>
    private static SagaInstance NewInstance<TData>(SagaDefinition<TData> definition, string id, TData data)
        where TData : class =>
        new()
        {
            SagaType = definition.Name,
            Id = id,
            Status = SagaStatus.Running,
            State = definition.Steps[0].Name,
            CurrentStep = 0,
            Data = SagaData.Serialize(data),
        };
}
