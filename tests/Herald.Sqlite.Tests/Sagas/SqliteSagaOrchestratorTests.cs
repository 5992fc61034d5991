using Herald.Conformance;
using Herald.Hosting;
using Herald.Reliability.Retry;
using Herald.Sagas;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Time.Testing;

namespace Herald.Sqlite.Tests.Sagas;

/// <summary>The orchestrator and its resume sweep on SQLite: parked instances run forward, and racing sweeps run a step once.</summary>
public sealed class SqliteSagaOrchestratorTests : IDisposable
{
    private static readonly RetryPolicy NoRetries = RetryPolicy.Create(r => r.NoRetries());
    private readonly TempDatabase _database = new();

    public void Dispose() => _database.Dispose();

    public sealed class Order
    {
        public List<string> Done { get; set; } = [];
    }

    private static SagaDefinition<Order> Fulfilment(bool chargeFails) =>
        SagaDefinition.Create<Order>("sqlite-fulfilment", s => s
            .Step("reserve", Act("reserve"), c => c.Data.Done.Contains("reserve") ? throw new InvalidOperationException("release refused") : ValueTask.CompletedTask, NoRetries)
            .Step("charge", chargeFails ? _ => throw new InvalidOperationException("payment service down") : Act("charge"), retry: NoRetries)
            .Step("ship", Act("ship"), retry: NoRetries));

    private static Func<SagaStepContext<Order>, ValueTask> Act(string name) => c =>
    {
        c.Data.Done.Add(name);
        return ValueTask.CompletedTask;
    };

    private async Task<IHost> StartAsync(Action<HeraldBuilder> configure, TimeProvider? time = null)
    {
        var builder = Host.CreateApplicationBuilder();
        builder.Logging.ClearProviders();
        builder.Services.AddHerald(h =>
        {
            h.Configure(o => o.StartConsumer = false);
            h.UseSqlite(_database.Path);
            configure(h);
        });
        if (time is not null)
        {
            builder.Services.AddSingleton<TimeProvider>(time);
        }

        var host = builder.Build();
        await host.StartAsync();
        return host;
    }

    [Fact]
    public async Task AParkedInstance_RetriedOnceItsCauseIsFixed_RunsForwardToCompletion()
    {
        using var host = await StartAsync(h => h.AddSaga(Fulfilment(chargeFails: false)));
        var orchestrator = host.Services.GetRequiredService<SagaOrchestrator>();
        var parked = await orchestrator.StartAsync(Fulfilment(chargeFails: true), "order-1", new Order());
        Assert.Equal(SagaStatus.Failed, parked.Status);
        Assert.Equal(["reserve"], parked.CompletedSteps);

        var ended = await orchestrator.RetryParkedAsync(Fulfilment(chargeFails: false), "order-1");
        var stored = await host.Services.GetRequiredService<ISagaStore>().LoadAsync("sqlite-fulfilment", "order-1");
        await host.StopAsync();

        Assert.Equal(SagaStatus.Completed, ended!.Status);
        Assert.Equal(SagaStatus.Completed, stored!.Status);
        Assert.Null(stored.Error);
        Assert.Equal(["reserve", "charge", "ship"], stored.CompletedSteps);
        Assert.Equal(["reserve", "charge", "ship"], SagaData.Read<Order>(stored).Done);
    }

    [Fact]
    public async Task TwoSweepsRacingForOneStaleInstance_RunItsStepOnce()
    {
        // Each sweep listed the instance as stale and resumed it: both ran its step (a call to a payment service, say)
        // before the version check at the commit left the instance to one of them.
        var time = new FakeTimeProvider(new DateTimeOffset(2026, 12, 7, 8, 0, 0, TimeSpan.Zero));
        var runs = 0;
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var definition = SagaDefinition.Create<Order>("sqlite-race", s => s
            .Step("charge", async c =>
            {
                Interlocked.Increment(ref runs);
                await release.Task.WaitAsync(c.CancellationToken);
                c.Data.Done.Add("charge");
            }, retry: NoRetries)
            .Step("ship", Act("ship"), retry: NoRetries));
        void Configure(HeraldBuilder h) => h.AddSaga(definition).ConfigureSagas(o =>
        {
            o.StaleAfter = TimeSpan.FromMinutes(1);
            o.ResumeInterval = TimeSpan.FromHours(1);
        });
        using var first = await StartAsync(Configure, time);
        using var second = await StartAsync(Configure, time);
        var store = first.Services.GetRequiredService<ISagaStore>();
        await store.SaveAsync(new SagaInstance { SagaType = "sqlite-race", Id = "order-2", Status = SagaStatus.Running, State = "charge", Data = "{}"u8.ToArray() });
        time.Advance(TimeSpan.FromMinutes(2));

        var sweeps = new[] { Sweep(first).SweepAsync(CancellationToken.None), Sweep(second).SweepAsync(CancellationToken.None) };
        await Eventually.UntilAsync(() => Volatile.Read(ref runs) == 2 || sweeps.Any(s => s.IsCompleted), "both sweeps run the step, or one of them is done");
        var runsWhileBlocked = Volatile.Read(ref runs);
        release.SetResult();
        await Task.WhenAll(sweeps);
        var ended = await store.LoadAsync("sqlite-race", "order-2");
        await first.StopAsync();
        await second.StopAsync();

        Assert.Equal(1, runsWhileBlocked);
        Assert.Equal(1, runs);
        Assert.Equal(SagaStatus.Completed, ended!.Status);
        Assert.Equal(["charge", "ship"], SagaData.Read<Order>(ended).Done);
    }

    private static SagaResumeService Sweep(IHost host) =>
        host.Services.GetServices<IHostedService>().OfType<SagaResumeService>().Single();
}
