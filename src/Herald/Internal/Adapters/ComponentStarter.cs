using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;

namespace Herald.Internal;

/// <summary>How an adapter's component starts (opens its file, migrates its schema, connects), registered once per component type.</summary>
internal sealed record ComponentStart<TService, TComponent>(Func<TComponent, CancellationToken, Task> Start);

/// <summary>
/// Starts an adapter's component when the host starts, so a wrong address, path or schema fails the start, named, instead of
/// the first message. The service is resolved and started only when it is the adapter's component: a later registration
/// (another transport) may have replaced it.
/// </summary>
internal sealed class ComponentStarter<TService, TComponent>(IServiceProvider services, ComponentStart<TService, TComponent> start) : IHostedService
    where TService : class
    where TComponent : class
{
    public Task StartAsync(CancellationToken cancellationToken) =>
        services.GetRequiredService<TService>() is TComponent component ? start.Start(component, cancellationToken) : Task.CompletedTask;

    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;
}
