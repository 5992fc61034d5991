using Herald.Hosting;
using Herald.Persistence;
using Herald.Reliability.Outbox;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace Herald.Sagas;

/// <summary>Resumes the unfinished instances of one registered saga.</summary>
internal interface ISagaResumption
{
    string SagaName { get; }

    Task<SagaInstance?> ResumeAsync(SagaOrchestrator orchestrator, SagaInstance listed, CancellationToken cancellationToken);
}

internal sealed class SagaResumption<TData>(SagaDefinition<TData> definition) : ISagaResumption
    where TData : class
{
    public string SagaName => definition.Name;

    public Task<SagaInstance?> ResumeAsync(SagaOrchestrator orchestrator, SagaInstance listed, CancellationToken cancellationToken) =>
        orchestrator.ResumeListedAsync(definition, listed, cancellationToken);
}

/// <summary>A registered state machine, whose instances' timeouts the sweep sends again when they were lost.</summary>
internal sealed record SagaStateMachineRegistration(string SagaName);

/// <summary>
/// Finds the instances of the registered sagas that no runner drives (a crash or a stop left them running or
/// compensating, or a resume failed on a store error) and resumes them, in the background, so the host starts at once.
/// One node leads the sweep (through <see cref="ILeaderElection"/>): at start and then every
/// <see cref="SagaOptions.ResumeInterval"/>, so a surviving node takes over the instances of a node that crashed without
/// waiting for a restart.
/// </summary>
/// <remarks>
/// Which instances are "not driven": with a single-process store (the in-process election of the in-memory stores),
/// every unfinished instance this process does not run. With a shared store (SQLite, PostgreSQL), another process may be running one
/// right now, so only instances without a save for <see cref="SagaOptions.StaleAfter"/> are taken over. Each is claimed
/// first, by a save of the version listed: a sweep that finds the instance moved on since it listed it (a runner saved
/// progress, another sweep claimed it) leaves it, so two sweeps racing never both run its step; the claim also stamps
/// the instance as saved now, so no other sweep takes it for stale while the step runs. A live runner is not taken for
/// stale however long its step runs: it renews the instance every third of StaleAfter while a step runs (see
/// <see cref="SagaLease"/>). Only a runner whose renewals failed for StaleAfter is raced: its step is cancelled, and the
/// version check at its commit leaves the instance to the sweep.
/// </remarks>
/// <para>
/// Without an outbox a state machine's timeout leaves once its transition has committed, so a crash (or a send failure)
/// in between leaves an instance holding a timeout whose message was never sent: the sweep sends again every timeout an
/// unfinished instance still holds <see cref="SagaOptions.StaleAfter"/> past its due time, under its id (a delivery that was
/// only late fires once all the same), once per timeout (<see cref="SagaTimeout.ResentAt"/>): one still held StaleAfter after
/// that was delivered and failed (a dead letter), so it is logged as such, once per leader, and not sent again, which would
/// only make a dead letter per sweep for ever. With an outbox the timeout commits with its transition, and nothing is sent again.
/// </para>
internal sealed class SagaResumeService(
    IEnumerable<ISagaResumption> sagas,
    IEnumerable<SagaStateMachineRegistration> machines,
    ISagaStore store,
    SagaOrchestrator orchestrator,
    SagaTimeouts timeouts,
    ILeaderElection election,
    IOptions<SagaOptions> options,
    TimeProvider timeProvider,
    ILogger<SagaResumeService> logger,
    OutboxRelay? outboxRelay = null,
    IOptions<OutboxOptions>? outboxOptions = null)
    : BackgroundService
{
    internal const string Resource = "$saga-resume";

    private readonly SagaOptions _options = options.Value;
    private readonly bool _singleProcess = election is InProcessLeaderElection;

    // As the handlers' pipeline decides (EndpointPipelineFactory): a transition's timeout went through the outbox.
    private readonly bool _timeoutsInOutbox = OutboxRelay.CarriesHandlerMessages(outboxRelay, outboxOptions);

    // The timeouts sent again whose delivery failed, already logged by this leader: only those still held, so it stays small.
    private HashSet<Guid> _failedLogged = [];

    protected override Task ExecuteAsync(CancellationToken stoppingToken) =>
        election.RunWhileLeadingAsync(Resource, SweepEveryIntervalAsync, _options.ResumeInterval, timeProvider, logger, stoppingToken);

    private async Task SweepEveryIntervalAsync(CancellationToken leading)
    {
        while (!leading.IsCancellationRequested)
        {
            await SweepAsync(leading).ConfigureAwait(false);
            await Task.Delay(_options.ResumeInterval, timeProvider, leading).ConfigureAwait(false);
        }
    }

    /// <summary>Resumes every unfinished instance that no runner drives now (claiming each first); returns how many it resumed.</summary>
    internal async Task<int> SweepAsync(CancellationToken cancellationToken)
    {
        var resumed = 0;
        foreach (var saga in sagas)
        {
            var due = await UndrivenAsync(saga.SagaName, cancellationToken).ConfigureAwait(false);
            Log.SagaSweep(logger, saga.SagaName, due.Count);
            await Parallel.ForEachAsync(
                due,
                new ParallelOptions { MaxDegreeOfParallelism = _options.ResumeConcurrency, CancellationToken = cancellationToken },
                async (instance, token) =>
                {
                    var id = instance.Id;
                    try
                    {
                        // Null: it moved on since it was listed, and is left to whoever moved it.
                        if (await saga.ResumeAsync(orchestrator, instance, token).ConfigureAwait(false) is not null)
                        {
                            Interlocked.Increment(ref resumed);
                        }
                    }
                    catch (OperationCanceledException) when (token.IsCancellationRequested)
                    {
                        throw;
                    }
#pragma warning disable CA1031 // One instance that cannot resume (its store failed) must not keep the others from resuming.
                    catch (Exception ex)
#pragma warning restore CA1031
                    {
                        Log.SagaResumeFailed(logger, ex, saga.SagaName, id);
                    }
                }).ConfigureAwait(false);
        }

        if (!_timeoutsInOutbox)
        {
            var failedLogged = new HashSet<Guid>();
            foreach (var machine in machines)
            {
                await ResendLostTimeoutsAsync(machine.SagaName, failedLogged, cancellationToken).ConfigureAwait(false);
            }

            _failedLogged = failedLogged;
        }

        return resumed;
    }

    // Sends again the timeouts held StaleAfter past their due time, once each; logs those sent again and still held (adding
    // them to failedLogged, logged only when this leader's previous sweep did not).
    private async Task ResendLostTimeoutsAsync(string sagaName, HashSet<Guid> failedLogged, CancellationToken cancellationToken)
    {
        var overdueBefore = timeProvider.GetUtcNow() - _options.StaleAfter;
        var lost = await UnfinishedAsync<(string Id, SagaTimeout Timeout)>(
            sagaName,
            (instance, found) =>
            {
                foreach (var timeout in instance.Timeouts)
                {
                    if (timeout.DueAt <= overdueBefore)
                    {
                        found.Add((instance.Id, timeout));
                    }
                }
            },
            cancellationToken).ConfigureAwait(false);
        foreach (var (id, timeout) in lost)
        {
            // Sent again already and still held: its delivery failed (a dead letter), and sending it again would only
            // make another one, for ever. Logged once; retrying the dead letter or a reschedule fires it.
            if (timeout.ResentAt is { } resentAt)
            {
                if (failedLogged.Add(timeout.Id) && !_failedLogged.Contains(timeout.Id))
                {
                    Log.SagaTimeoutDeliveryFailed(logger, sagaName, id, timeout.Name, timeout.Id, resentAt);
                }

                continue;
            }

            try
            {
                if (await timeouts.ResendAsync(sagaName, id, timeout.Id, cancellationToken).ConfigureAwait(false) is not null)
                {
                    Log.SagaTimeoutResent(logger, sagaName, id, timeout.Name, timeout.Id, timeout.DueAt);
                }
            }
            catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
            {
                throw;
            }
#pragma warning disable CA1031 // A transition that ran meanwhile, or a store or transport failure: the next sweep looks again.
            catch (Exception ex)
#pragma warning restore CA1031
            {
                Log.SagaTimeoutResendFailed(logger, ex, sagaName, id, timeout.Name, timeout.Id);
            }
        }
    }

    private Task<List<SagaInstance>> UndrivenAsync(string sagaName, CancellationToken cancellationToken)
    {
        var staleBefore = timeProvider.GetUtcNow() - _options.StaleAfter;
        return UnfinishedAsync<SagaInstance>(
            sagaName,
            (instance, due) =>
            {
                if (!orchestrator.IsRunningHere(sagaName, instance.Id) && (_singleProcess || instance.UpdatedAt <= staleBefore))
                {
                    due.Add(instance);
                }
            },
            cancellationToken);
    }

    // What `pick` takes from every unfinished instance of the saga.
    private async Task<List<T>> UnfinishedAsync<T>(string sagaName, Action<SagaInstance, List<T>> pick, CancellationToken cancellationToken)
    {
        // Collect first: a resumed instance changes status, which would move the paging under our feet.
        var due = new List<T>();
        var query = SagaQuery.Unfinished(limit: 500) with { SagaType = sagaName };
        while (true)
        {
            var page = await store.ListAsync(query, cancellationToken).ConfigureAwait(false);
            foreach (var instance in page)
            {
                pick(instance, due);
            }

            if (page.Count < query.Limit)
            {
                return due;
            }

            query = query with { After = (sagaName, page[^1].Id) };
        }
    }
}
