using Herald.Reliability.DeadLetters;
using Herald.Transport;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;

namespace Herald.Testing.Internal;

/// <summary>Fails the start when the transport or dead-letter store was replaced after the harness wrapped it: the test would observe nothing.</summary>
internal sealed class HarnessStartCheck(IServiceProvider services) : IHostedService
{
    public Task StartAsync(CancellationToken cancellationToken)
    {
        if (services.GetRequiredService<ITransport>() is not ObservingTransport || services.GetRequiredService<IDeadLetterStore>() is not ObservingDeadLetterStore)
        {
            throw new InvalidOperationException(
                "The transport or dead-letter store was configured after AddHeraldTestHarness, so the harness cannot observe it. " +
                "Configure Herald inside AddHeraldTestHarness(h => ...) or HeraldTestHarness.StartAsync(h => ...), or call it last.");
        }

        return Task.CompletedTask;
    }

    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;
}
