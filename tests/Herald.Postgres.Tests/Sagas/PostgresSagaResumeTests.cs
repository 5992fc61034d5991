using System.Collections.Concurrent;
using Herald.Conformance;
using Herald.Reliability.Retry;
using Herald.Sagas;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace Herald.Postgres.Tests.Sagas;

/// <summary>
/// Orchestrated sagas on a store shared by processes (two hosts on one schema stand for two processes): a surviving node
/// takes over an instance whose node died, once it is stale, and never races an instance another node is running.
/// </summary>
public sealed class PostgresSagaResumeTests(PostgresSchemaFixture schema) : IClassFixture<PostgresSchemaFixture>
{
    private static readonly TimeSpan StaleAfter = TimeSpan.FromSeconds(4);

    public sealed class Data
    {
        public int Steps { get; set; }
    }

    private sealed class Steps
    {
        public ConcurrentQueue<string> Calls { get; } = new();

        public TaskCompletionSource Release { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public TaskCompletionSource Blocked { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public bool Block { get; init; }
    }

    private static SagaDefinition<Data> Definition(string name, Steps steps) =>
        SagaDefinition.Create<Data>(name, s => s
            .Step("first", c => { steps.Calls.Enqueue($"{c.SagaId}:first"); return ValueTask.CompletedTask; }, retry: RetryPolicy.Create(r => r.NoRetries()))
            .Step("second", async c =>
            {
                steps.Calls.Enqueue($"{c.SagaId}:second");
                if (steps.Block)
                {
                    steps.Blocked.TrySetResult();
                    await steps.Release.Task.WaitAsync(c.CancellationToken);
                }
            }, retry: RetryPolicy.Create(r => r.NoRetries())));

    // Counts the resume sweeps of every host, from their debug log event (1321), so a test can wait for sweeps to happen.
    private readonly LogEventCounter _counter = new(1321);

    private async Task<IHost> StartAsync(SagaDefinition<Data> definition)
    {
        var builder = Host.CreateApplicationBuilder();
        builder.Logging.ClearProviders().SetMinimumLevel(LogLevel.Debug).AddProvider(_counter);
        builder.Services.AddHerald(h => h
            .UsePostgres(PostgresTestDatabase.ConnectionString, o => o.Schema = schema.Schema)
            .AddSaga(definition)
            .Configure(o => o.StartConsumer = false)
            .ConfigureSagas(o =>
            {
                o.ResumeInterval = TimeSpan.FromMilliseconds(100);
                o.StaleAfter = StaleAfter;
            }));
        var host = builder.Build();
        await host.StartAsync();
        return host;
    }

    [Fact]
    public async Task AnInstanceWhoseNodeDied_IsTakenOverByASurvivingNode_OnceStale_AndRunsEachStepOnce()
    {
        var name = "resume-" + Guid.NewGuid().ToString("N")[..8];
        var steps = new Steps();
        using var survivor = await StartAsync(Definition(name, steps));
        var store = survivor.Services.GetRequiredService<ISagaStore>();

        // What a node that died after the first step leaves behind.
        await store.SaveAsync(new SagaInstance
        {
            SagaType = name,
            Id = "orphan",
            Status = SagaStatus.Running,
            State = "second",
            CurrentStep = 1,
            CompletedSteps = ["first"],
            Data = """{"Steps":1}"""u8.ToArray(),
        });

        await Eventually.UntilAsync(async () => (await store.LoadAsync(name, "orphan"))!.Status == SagaStatus.Completed, "the survivor completes the orphan", TimeSpan.FromSeconds(30));
        var ended = (await store.LoadAsync(name, "orphan"))!;

        Assert.Equal(["orphan:second"], steps.Calls);
        Assert.True(ended.UpdatedAt - ended.CreatedAt >= StaleAfter, $"taken over after {ended.UpdatedAt - ended.CreatedAt}, before it went stale");
    }

    [Fact]
    public async Task AnInstanceAnotherNodeIsRunning_IsNotRacedByTheSweep_WhileItIsFresh()
    {
        var name = "live-" + Guid.NewGuid().ToString("N")[..8];
        var steps = new Steps { Block = true };
        var definition = Definition(name, steps);
        // The node started first leads the sweep; the instance runs on the other one, so only the staleness rule holds it back.
        using var sweeper = await StartAsync(definition);
        await Eventually.UntilAsync(() => _counter.Count > 0, "the first node sweeps");
        using var runner = await StartAsync(definition);

        var run = runner.Services.GetRequiredService<SagaOrchestrator>().StartAsync(definition, "live", new Data());
        await steps.Blocked.Task.WaitAsync(TimeSpan.FromSeconds(30));
        // The leading node sweeps every 100 ms; the instance was saved moments ago, so no sweep takes it over.
        var seen = _counter.Count;
        await Eventually.UntilAsync(() => _counter.Count >= seen + 3, "three more sweeps ran while the step is blocked");
        steps.Release.SetResult();
        var ended = await run.WaitAsync(TimeSpan.FromSeconds(30));

        Assert.Equal(SagaStatus.Completed, ended.Status);
        Assert.Equal(["live:first", "live:second"], steps.Calls);
    }
}
