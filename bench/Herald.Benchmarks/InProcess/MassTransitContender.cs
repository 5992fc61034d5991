using MassTransit;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;

namespace Herald.Benchmarks.InProcess;

public sealed record MassTransitPing(int Sequence);

public sealed class MassTransitPingConsumer(HandledCounter counter) : IConsumer<MassTransitPing>
{
    public Task Consume(ConsumeContext<MassTransitPing> context)
    {
        counter.Increment();
        return Task.CompletedTask;
    }
}

/// <summary>MassTransit 8 in-memory transport: AddMassTransit + UsingInMemory, one consumer, IBus.Publish.</summary>
internal sealed class MassTransitContender : IContender
{
    private readonly HandledCounter _counter = new();
    private IHost? _host;
    private IBus? _bus;

    public string Name => "MassTransit 8.5.12 (in-memory)";

    public string Setup =>
        "`AddMassTransit(x => { x.AddConsumer<MassTransitPingConsumer>(); x.UsingInMemory((ctx, cfg) => cfg.ConfigureEndpoints(ctx)); })`, " +
        "usage telemetry off, default endpoint settings; `IBus.Publish`.";

    public async Task StartAsync(CancellationToken cancellationToken)
    {
        var builder = Hosts.CreateBuilder();
        builder.Services.AddSingleton(_counter);
        builder.Services.AddMassTransit(x =>
        {
            // MassTransit 8.5 reports usage over HTTP at start; a benchmark sends nothing off the machine.
            x.DisableUsageTelemetry();
            x.AddConsumer<MassTransitPingConsumer>();
            x.UsingInMemory((context, cfg) => cfg.ConfigureEndpoints(context));
        });
        builder.Services.AddOptions<MassTransitHostOptions>().Configure(o => o.WaitUntilStarted = true);
        _host = builder.Build();
        await _host.StartAsync(cancellationToken).ConfigureAwait(false);
        _bus = _host.Services.GetRequiredService<IBus>();
    }

    public async Task RunAsync(int messages, int producers, CancellationToken cancellationToken)
    {
        var bus = _bus ?? throw new InvalidOperationException("Not started.");
        _counter.Reset(messages);
        await Producers.RunAsync(messages, producers, i => new ValueTask(bus.Publish(new MassTransitPing(i), cancellationToken)), cancellationToken).ConfigureAwait(false);
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
