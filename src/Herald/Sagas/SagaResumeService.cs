using Herald.Hosting;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace Herald.Sagas;

/// <summary>Resumes the unfinished instances of one registered saga.</summary>
internal interface ISagaResumption
{
    string SagaName { get; }

    Task ResumeAsync(SagaOrchestrator orchestrator, string id, CancellationToken cancellationToken);
}

internal sealed class SagaResumption<TData>(SagaDefinition<TData> definition) : ISagaResumption
    where TData : class
{
    public string SagaName => definition.Name;

    public Task ResumeAsync(SagaOrchestrator orchestrator, string id, CancellationToken cancellationToken) =>
        orchestrator.ResumeAsync(definition, id, cancellationToken);
}

/// <summary>
/// At start-up, resumes every instance of the registered sagas that a crash or a stop left running or compensating, in
/// the background, one saga instance at a time, so the host starts at once.
/// </summary>
internal sealed class SagaResumeService(IEnumerable<ISagaResumption> sagas, ISagaStore store, SagaOrchestrator orchestrator, ILogger<SagaResumeService> logger)
    : BackgroundService
{
    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        foreach (var saga in sagas)
        {
            // Collect the ids first: a resumed instance changes status, which would move the paging under our feet.
            var unfinished = new List<string>();
            var query = SagaQuery.Unfinished(limit: 500) with { SagaType = saga.SagaName };
            while (true)
            {
                var page = await store.ListAsync(query, stoppingToken).ConfigureAwait(false);
                unfinished.AddRange(page.Select(i => i.Id));
                if (page.Count < query.Limit)
                {
                    break;
                }

                query = query with { After = (saga.SagaName, page[^1].Id) };
            }

            foreach (var id in unfinished)
            {
                try
                {
                    await saga.ResumeAsync(orchestrator, id, stoppingToken).ConfigureAwait(false);
                }
                catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
                {
                    return;
                }
#pragma warning disable CA1031 // One instance that cannot resume (its store failed) must not keep the others from resuming.
                catch (Exception ex)
#pragma warning restore CA1031
                {
                    Log.SagaResumeFailed(logger, ex, saga.SagaName, id);
                }
            }
        }
    }
}
