using System.Collections.Concurrent;
using Herald.Conformance;
using Herald.Persistence;
using Herald.Reliability.Retry;
using Herald.Sagas;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Options;
using Microsoft.Extensions.Time.Testing;

namespace Herald.Tests.Sagas;

/// <summary>The background sweep that resumes orchestrated saga instances no runner drives, at start and periodically.</summary>
public sealed class SagaResumeTests
{
    public sealed class Data
    {
        public int Steps { get; set; }
    }

    private static readonly DateTimeOffset Start = new(2026, 12, 4, 8, 0, 0, TimeSpan.Zero);

    private static SagaDefinition<Data> TwoSteps(ConcurrentQueue<string> calls) =>
        SagaDefinition.Create<Data>("two-steps", s => s
            .Step("first", c => { calls.Enqueue($"{c.SagaId}:first"); c.Data.Steps++; return ValueTask.CompletedTask; }, retry: RetryPolicy.Create(r => r.NoRetries()))
            .Step("second", c => { calls.Enqueue($"{c.SagaId}:second"); c.Data.Steps++; return ValueTask.CompletedTask; }, retry: RetryPolicy.Create(r => r.NoRetries())));

    private static SagaInstance LeftRunning(string id) => new()
    {
        SagaType = "two-steps",
        Id = id,
        Status = SagaStatus.Running,
        State = "second",
        CurrentStep = 1,
        CompletedSteps = ["first"],
        Data = """{"Steps":1}"""u8.ToArray(),
    };

    private static ServiceProvider Build(FakeTimeProvider time, ConcurrentQueue<string> calls, bool sharedStore)
    {
        var services = new ServiceCollection();
        services.AddLogging();
        services.AddSingleton<TimeProvider>(time);
        services.AddHerald(h => h
            .AddSaga(TwoSteps(calls))
            .ConfigureSagas(o =>
            {
                o.ResumeInterval = TimeSpan.FromSeconds(10);
                o.StaleAfter = TimeSpan.FromMinutes(1);
            }));
        if (sharedStore)
        {
            // Stands for an election across processes (PostgreSQL's): the sweep may not assume it owns every instance.
            services.Replace(ServiceDescriptor.Singleton<ILeaderElection, SharedStoreElection>());
        }

        return services.BuildServiceProvider();
    }

    private static BackgroundService ResumeService(IServiceProvider provider) =>
        provider.GetServices<IHostedService>().OfType<BackgroundService>().Single(s => s.GetType().Name == "SagaResumeService");

    [Fact]
    public async Task AnInstanceLeftUndrivenAfterStart_IsResumedByALaterSweep_WithoutARestart()
    {
        var time = new FakeTimeProvider(Start);
        var calls = new ConcurrentQueue<string>();
        await using var provider = Build(time, calls, sharedStore: false);
        var store = provider.GetRequiredService<ISagaStore>();
        await store.SaveAsync(LeftRunning("early"));
        var sweep = ResumeService(provider);
        await sweep.StartAsync(CancellationToken.None);
        try
        {
            await Eventually.UntilAsync(async () => (await store.LoadAsync("two-steps", "early"))!.Status == SagaStatus.Completed, "the first sweep resumes the instance found at start");
            // The first sweep listed its instances before resuming them, so this one is left to a later sweep.
            await store.SaveAsync(LeftRunning("late"));

            await Eventually.UntilAsync(
                async () =>
                {
                    if ((await store.LoadAsync("two-steps", "late"))!.Status == SagaStatus.Completed)
                    {
                        return true;
                    }

                    time.Advance(TimeSpan.FromSeconds(10));
                    return false;
                },
                "a later sweep resumes it");
            Assert.Equal(["early:second", "late:second"], calls);
        }
        finally
        {
            await sweep.StopAsync(CancellationToken.None);
        }
    }

    [Fact]
    public async Task WithAStoreSharedByProcesses_AnInstanceSavedRecently_IsLeftToItsRunner_UntilItGoesStale()
    {
        var time = new FakeTimeProvider(Start);
        var calls = new ConcurrentQueue<string>();
        await using var provider = Build(time, calls, sharedStore: true);
        var store = provider.GetRequiredService<ISagaStore>();
        await store.SaveAsync(LeftRunning("stale"));
        time.Advance(TimeSpan.FromMinutes(2));
        await store.SaveAsync(LeftRunning("fresh"));
        var resume = (SagaResumeService)ResumeService(provider);

        Assert.Equal(1, await resume.SweepAsync(CancellationToken.None));
        Assert.Equal(["stale:second"], calls);
        Assert.Equal(SagaStatus.Running, (await store.LoadAsync("two-steps", "fresh"))!.Status);

        time.Advance(TimeSpan.FromMinutes(1));

        Assert.Equal(1, await resume.SweepAsync(CancellationToken.None));
        Assert.Equal(["stale:second", "fresh:second"], calls);
        Assert.Equal(SagaStatus.Completed, (await store.LoadAsync("two-steps", "fresh"))!.Status);
    }

    [Fact]
    public async Task WithASingleProcessStore_EveryUndrivenInstanceIsResumedAtOnce_HoweverRecent()
    {
        var time = new FakeTimeProvider(Start);
        var calls = new ConcurrentQueue<string>();
        await using var provider = Build(time, calls, sharedStore: false);
        var store = provider.GetRequiredService<ISagaStore>();
        await store.SaveAsync(LeftRunning("just-crashed"));

        Assert.Equal(1, await ((SagaResumeService)ResumeService(provider)).SweepAsync(CancellationToken.None));
        Assert.Equal(["just-crashed:second"], calls);
    }

    [Theory]
    [InlineData(0, 60, 4, "ResumeInterval")]
    [InlineData(10, 0, 4, "StaleAfter")]
    [InlineData(10, 60, 0, "ResumeConcurrency")]
    public void BadSagaOptions_AreRejectedAtStart_NamingTheSetting(int intervalSeconds, int staleSeconds, int concurrency, string setting)
    {
        var services = new ServiceCollection();
        services.AddHerald(h => h.AddSaga(TwoSteps(new())).ConfigureSagas(o =>
        {
            o.ResumeInterval = TimeSpan.FromSeconds(intervalSeconds);
            o.StaleAfter = TimeSpan.FromSeconds(staleSeconds);
            o.ResumeConcurrency = concurrency;
        }));
        using var provider = services.BuildServiceProvider();

        var error = Assert.Throws<OptionsValidationException>(() => provider.GetRequiredService<IOptions<SagaOptions>>().Value);

        Assert.Contains(setting, error.Message, StringComparison.Ordinal);
    }

    private sealed class SharedStoreElection : ILeaderElection
    {
        public ValueTask<LeaderLease?> TryAcquireAsync(string resource, CancellationToken cancellationToken = default) =>
            ValueTask.FromResult<LeaderLease?>(new Held(resource));

        private sealed class Held(string resource) : LeaderLease(resource)
        {
            protected override ValueTask ReleaseAsync() => ValueTask.CompletedTask;
        }
    }
}
