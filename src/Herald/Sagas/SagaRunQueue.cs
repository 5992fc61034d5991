using System.Diagnostics;
using System.Threading.Channels;
using Herald.Diagnostics;
using Herald.Hosting;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace Herald.Sagas;

/// <summary>
/// Runs the orchestrated instances started in a unit of work (<see cref="SagaOrchestrator.StartInAsync{TData}"/>) once it
/// committed, in the background, at most <see cref="SagaOptions.RunConcurrency"/> at once (each step holds a connection
/// while it commits). An instance whose run is cut short (a stop, a crash, a store error) stays unfinished in the store,
/// where the resume sweep finds it.
/// </summary>
internal sealed class SagaRunQueue : BackgroundService
{
    private readonly Channel<Run> _runs = Channel.CreateBounded<Run>(new BoundedChannelOptions(1024) { FullMode = BoundedChannelFullMode.Wait });
    private readonly SagaOptions _options;
    private readonly ILogger _logger;
    private readonly SagaActivity _activity;

    public SagaRunQueue(SagaOrchestrator orchestrator, IOptions<SagaOptions> options, ILogger<SagaRunQueue> logger)
    {
        _options = options.Value;
        _logger = logger;
        _activity = orchestrator.Activity;
        orchestrator.Queue = this;
    }

    /// <summary>Queues a committed instance to run; waits while the queue is full (back-pressure on the starting messages).</summary>
    public async ValueTask EnqueueAsync(string saga, string id, ActivityContext parent, Func<CancellationToken, Task> run, CancellationToken cancellationToken)
    {
        // Under way from here, before its message is acked: the harness's idleness never misses a run still queued.
        _activity.Started();
        try
        {
            await _runs.Writer.WriteAsync(new Run(saga, id, parent, run), cancellationToken).ConfigureAwait(false);
        }
        catch
        {
            _activity.Ended();
            throw;
        }
    }

    protected override Task ExecuteAsync(CancellationToken stoppingToken) =>
        Task.WhenAll(Enumerable.Range(0, _options.RunConcurrency).Select(_ => Task.Run(() => WorkAsync(stoppingToken), CancellationToken.None)));

    private async Task WorkAsync(CancellationToken stoppingToken)
    {
        try
        {
            await foreach (var run in _runs.Reader.ReadAllAsync(stoppingToken).ConfigureAwait(false))
            {
                // The instance's steps continue the trace of the message that started it.
                using var activity = HeraldDiagnostics.ActivitySource.StartActivity("saga " + run.Saga, ActivityKind.Internal, run.Parent);
                activity?.SetTag("herald.saga", run.Saga);
                activity?.SetTag("herald.saga.id", run.Id);
                try
                {
                    Task running;
                    try
                    {
                        running = run.Execute(stoppingToken);
                    }
                    finally
                    {
                        // From here the orchestrator counts the run (it does before its first await): counted once, not twice.
                        _activity.Ended();
                    }

                    await running.ConfigureAwait(false);
                }
                catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
                {
                    return;
                }
#pragma warning disable CA1031 // One instance that cannot run now stays unfinished in the store: the resume sweep takes it.
                catch (Exception ex)
#pragma warning restore CA1031
                {
                    HeraldDiagnostics.Failed(activity, ex);
                    Log.SagaResumeFailed(_logger, ex, run.Saga, run.Id);
                }
            }
        }
        catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
        {
        }
    }

    private sealed record Run(string Saga, string Id, ActivityContext Parent, Func<CancellationToken, Task> Execute);
}
