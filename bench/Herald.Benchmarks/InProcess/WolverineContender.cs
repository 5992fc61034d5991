using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Wolverine;
using IWolverineBus = Wolverine.IMessageBus;

namespace Herald.Benchmarks.InProcess;

public sealed record WolverinePing(int Sequence);

public sealed class WolverinePingHandler(HandledCounter counter)
{
    public void Handle(WolverinePing message) => counter.Increment();
}

/// <summary>Wolverine local queue: UseWolverine with runtime compilation, one handler, IMessageBus.PublishAsync to a local queue.</summary>
internal sealed class WolverineContender : IContender
{
    private readonly HandledCounter _counter = new();
    private IHost? _host;
    private IWolverineBus? _bus;

    public string Name => "Wolverine 6.62 (local queue)";

    public string Setup =>
        "`UseWolverine(opts => { opts.UseRuntimeCompilation(); opts.PublishMessage<WolverinePing>().ToLocalQueue(\"ping\"); })`, " +
        "only the benchmark handler discovered, default local queue settings (in memory, not durable); `IMessageBus.PublishAsync`.";

    public async Task StartAsync(CancellationToken cancellationToken)
    {
        var builder = Hosts.CreateBuilder();
        builder.Services.AddSingleton(_counter);
        builder.UseWolverine(opts =>
        {
            opts.UseRuntimeCompilation();
            opts.Discovery.DisableConventionalDiscovery().IncludeType<WolverinePingHandler>();
            opts.PublishMessage<WolverinePing>().ToLocalQueue("ping");
        });
        _host = builder.Build();
        await _host.StartAsync(cancellationToken).ConfigureAwait(false);
        _bus = _host.Services.GetRequiredService<IWolverineBus>();
    }

    public async Task RunAsync(int messages, int producers, CancellationToken cancellationToken)
    {
        var bus = _bus ?? throw new InvalidOperationException("Not started.");
        _counter.Reset(messages);
        await Producers.RunAsync(messages, producers, i => bus.PublishAsync(new WolverinePing(i)), cancellationToken).ConfigureAwait(false);
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
