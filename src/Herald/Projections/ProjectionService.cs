using Microsoft.Extensions.Hosting;

namespace Herald.Projections;

/// <summary>Runs the async projections of the host in the background (see <see cref="ProjectionManager"/>).</summary>
internal sealed class ProjectionService(ProjectionManager manager) : BackgroundService
{
    protected override Task ExecuteAsync(CancellationToken stoppingToken) => manager.RunAsync(stoppingToken);
}
