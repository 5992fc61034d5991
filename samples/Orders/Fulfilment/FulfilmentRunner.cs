using System.Diagnostics;
using System.Threading.Channels;
using Herald.Sagas;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace Orders.Fulfilment;

/// <summary>
/// Runs started fulfilment sagas in the background, a bounded number at once (each step holds a database connection
/// while it commits). An instance whose run is cut short (a stop, a crash) stays running in the saga store and is resumed
/// by Herald's saga resume sweep (at start and every 5 s; on the distributed profile once it has had no save for 15 s).
/// </summary>
public sealed class FulfilmentRunner(SagaOrchestrator orchestrator, ILogger<FulfilmentRunner> logger) : BackgroundService
{
    private const int Workers = 16;

    private readonly Channel<(string Id, ActivityContext Parent)> _started = Channel.CreateBounded<(string, ActivityContext)>(
        new BoundedChannelOptions(1024) { FullMode = BoundedChannelFullMode.Wait, SingleReader = false });

    /// <summary>Queues a saved instance to run; waits while the queue is full.</summary>
    public ValueTask EnqueueAsync(string id, ActivityContext parent, CancellationToken cancellationToken) =>
        _started.Writer.WriteAsync((id, parent), cancellationToken);

    protected override Task ExecuteAsync(CancellationToken stoppingToken) =>
        Task.WhenAll(Enumerable.Range(0, Workers).Select(_ => Task.Run(() => WorkAsync(stoppingToken), stoppingToken)));

    private async Task WorkAsync(CancellationToken stoppingToken)
    {
        try
        {
            await foreach (var (id, parent) in _started.Reader.ReadAllAsync(stoppingToken))
            {
                // The saga's spans continue the trace of the request that placed the order.
                using var activity = OrdersTelemetry.Source.StartActivity("order-fulfilment", ActivityKind.Internal, parent);
                activity?.SetTag("order.id", id);
                try
                {
                    var ended = await orchestrator.ResumeAsync(FulfilmentSaga.Definition, id, stoppingToken);
                    logger.LogInformation("fulfilment {OrderId}: {Status} {Error}", id, ended?.Status, ended?.Error);
                }
                catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
                {
                    return;
                }
#pragma warning disable CA1031 // One saga that cannot run now (its store failed) stays running and is resumed by the resume sweep.
                catch (Exception ex)
#pragma warning restore CA1031
                {
                    logger.LogError(ex, "fulfilment {OrderId} stopped; the resume sweep picks it up again", id);
                }
            }
        }
        catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
        {
        }
    }
}
