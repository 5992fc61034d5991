using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Herald.Streams.Hosting;

/// <summary>Runs every registered stream processor while the host runs; a processor that fails restarts from its last commit.</summary>
internal sealed class StreamHostedService(IServiceProvider services) : BackgroundService
{
    private static readonly TimeSpan RetryDelay = TimeSpan.FromSeconds(5);

    protected override Task ExecuteAsync(CancellationToken stoppingToken)
    {
        var processors = services.GetRequiredService<StreamProcessors>();
        var time = services.GetService<TimeProvider>() ?? TimeProvider.System;
        var logger = services.GetService<ILoggerFactory>()?.CreateLogger<StreamProcessor>() ?? NullLogger<StreamProcessor>.Instance;
        return Task.WhenAll(processors.All.Select(p => RunAsync(p, time, logger, stoppingToken)));
    }

    private static async Task RunAsync(StreamProcessor processor, TimeProvider time, ILogger logger, CancellationToken stoppingToken)
    {
        while (!stoppingToken.IsCancellationRequested)
        {
            try
            {
                await processor.StartAsync(stoppingToken).ConfigureAwait(false);
                await processor.Completion.WaitAsync(stoppingToken).ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (stoppingToken.IsCancellationRequested)
            {
                break;
            }
            catch (Exception ex)
            {
                Log.ProcessorFailed(logger, ex, processor.Name, RetryDelay);
                try
                {
                    await Task.Delay(RetryDelay, time, stoppingToken).ConfigureAwait(false);
                }
                catch (OperationCanceledException)
                {
                    break;
                }
            }

            if (processor.Completion.IsCompletedSuccessfully && !stoppingToken.IsCancellationRequested)
            {
                // An external-source processor has no loop: it runs until the host stops.
                await Task.Delay(Timeout.Infinite, stoppingToken).ContinueWith(static _ => { }, TaskScheduler.Default).ConfigureAwait(false);
            }
        }

        await processor.StopAsync(CancellationToken.None).ConfigureAwait(false);
    }
}
