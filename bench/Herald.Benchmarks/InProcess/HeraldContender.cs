using Herald.Handling;
using Herald.Messages;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using IHeraldBus = Herald.Handling.IMessageBus;

namespace Herald.Benchmarks.InProcess;

[MessageType("bench.ping")]
public sealed record HeraldPing(int Sequence);

public sealed class HeraldPingHandler(HandledCounter counter) : IMessageHandler<HeraldPing>
{
    public ValueTask HandleAsync(HeraldPing message, MessageContext context, CancellationToken cancellationToken)
    {
        counter.Increment();
        return ValueTask.CompletedTask;
    }
}

/// <summary>Herald through the public API: a host with AddHerald, the default in-memory transport, IMessageBus.PublishAsync.</summary>
internal sealed class HeraldContender(ServiceLifetime handlerLifetime) : IContender
{
    private readonly HandledCounter _counter = new();
    private IHost? _host;
    private IHeraldBus? _bus;

    public string Name => $"Herald ({handlerLifetime.ToString().ToLowerInvariant()} handler)";

    public string Setup =>
        $"`services.AddHerald(h => h.AddHandler<HeraldPingHandler>({(handlerLifetime == ServiceLifetime.Scoped ? "" : "ServiceLifetime.Singleton")}))`, " +
        "default in-memory transport and options (MaxConcurrency = cores, Prefetch 64, queue capacity 10,000), JSON body; `IMessageBus.PublishAsync`.";

    public async Task StartAsync(CancellationToken cancellationToken)
    {
        var builder = Hosts.CreateBuilder();
        builder.Services.AddSingleton(_counter);
        builder.Services.AddHerald(h => h.AddHandler<HeraldPingHandler>(handlerLifetime));
        _host = builder.Build();
        await _host.StartAsync(cancellationToken).ConfigureAwait(false);
        _bus = _host.Services.GetRequiredService<IHeraldBus>();
    }

    public async Task RunAsync(int messages, int producers, CancellationToken cancellationToken)
    {
        var bus = _bus ?? throw new InvalidOperationException("Not started.");
        _counter.Reset(messages);
        await Producers.RunAsync(messages, producers, i => bus.PublishAsync(new HeraldPing(i), cancellationToken: cancellationToken), cancellationToken).ConfigureAwait(false);
        await _counter.WaitAsync(Producers.Timeout(messages), cancellationToken).ConfigureAwait(false);
    }

    public async ValueTask DisposeAsync()
    {
        if (_host is not null)
        {
            await _host.StopAsync().ConfigureAwait(false);
            _host.Dispose();
        }
    }
}

/// <summary>Every contender's host is built the same way: no configuration sources, warnings and errors to the console.</summary>
internal static class Hosts
{
    public static HostApplicationBuilder CreateBuilder()
    {
        var builder = Host.CreateApplicationBuilder(new HostApplicationBuilderSettings { DisableDefaults = true, EnvironmentName = Environments.Production });
        builder.Logging.ClearProviders().AddSimpleConsole().SetMinimumLevel(LogLevel.Warning);
        return builder;
    }
}
