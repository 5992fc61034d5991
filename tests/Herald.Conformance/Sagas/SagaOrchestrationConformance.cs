using Herald.Hosting;
using Herald.Reliability.Retry;
using Herald.Sagas;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Time.Testing;

namespace Herald.Conformance.Sagas;

/// <summary>
/// Orchestrated sagas on a persistence engine, against a reference model: seeded definitions of 2 to 5 steps whose actions
/// and compensations succeed, fail for a while, fail for good, time out on a fake clock, or are cut by a crash of their
/// host; a new host on the same store and (on a store processes share) a second host resume the crashed instance at once.
/// </summary>
public abstract partial class SagaOrchestrationConformance
{
    /// <summary>How long an instance goes without a save before another host may take it over.</summary>
    protected static readonly TimeSpan StaleAfter = TimeSpan.FromMinutes(1);

    /// <summary>Every step's timeout.</summary>
    protected static readonly TimeSpan StepTimeout = TimeSpan.FromSeconds(30);

    /// <summary>Three attempts a step or a compensation, no back-off.</summary>
    protected static readonly RetryPolicy ThreeAttempts = RetryPolicy.Create(r => r.Immediate(2).Delayed(0, TimeSpan.Zero, TimeSpan.Zero));

    /// <summary>Names a fresh, empty store (a file, a schema) for one test; every host of the test shares it.</summary>
    protected abstract string NewStore();

    /// <summary>Makes the host keep its saga instances on the engine at <paramref name="store"/>.</summary>
    protected abstract void UseStore(HeraldBuilder herald, string store);

    /// <summary>
    /// Whether processes may share the store (SQLite, PostgreSQL): then a second host runs beside the first, and a crashed
    /// instance is resumed once stale. The in-memory stores serve one process: one host at a time.
    /// </summary>
    protected virtual bool SharedStore => true;

    /// <summary>A saga's data: the steps done and not undone, in order, as the actions and compensations saw them.</summary>
    public sealed class Trail
    {
        public List<string> Done { get; set; } = [];
    }

    /// <summary>Which host a step ran on (a singleton of each host).</summary>
    private sealed record HostTag(string Name);

    /// <summary>Starts a host named <paramref name="name"/> on <paramref name="store"/> running <paramref name="definitions"/>.</summary>
    private async Task<IHost> StartHostAsync(string store, string name, FakeTimeProvider clock, IEnumerable<SagaDefinition<Trail>> definitions)
    {
        var builder = Host.CreateApplicationBuilder();
        builder.Logging.ClearProviders();
        builder.Services.AddSingleton<TimeProvider>(clock);
        builder.Services.AddSingleton(new HostTag(name));
        builder.Services.AddHerald(h =>
        {
            h.Configure(o => o.StartConsumer = false);
            UseStore(h, store);
            h.ConfigureSagas(o =>
            {
                o.StaleAfter = StaleAfter;
                // The sweep runs at each host's start; the clock never moves a day in a run, so no other sweep comes unplanned.
                o.ResumeInterval = TimeSpan.FromDays(1);
            });
            foreach (var definition in definitions)
            {
                h.AddSaga(definition);
            }
        });
        var host = builder.Build();
        await host.StartAsync();
        return host;
    }
}
