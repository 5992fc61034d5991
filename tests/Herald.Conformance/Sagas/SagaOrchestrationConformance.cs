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
/// Some steps retry after a back-off on the fake clock, and a parked instance is compensated again or run forward again
/// once its cause is fixed, from either host, by two calls at once too.
/// </summary>
public abstract partial class SagaOrchestrationConformance
{
    /// <summary>How long an instance goes without a save before another host may take it over.</summary>
    protected static readonly TimeSpan StaleAfter = TimeSpan.FromMinutes(1);

    /// <summary>Every step's timeout.</summary>
    protected static readonly TimeSpan StepTimeout = TimeSpan.FromSeconds(30);

    /// <summary>Three attempts a step or a compensation, no back-off.</summary>
    protected static readonly RetryPolicy ThreeAttempts = RetryPolicy.Create(r => r.Immediate(2).Delayed(0, TimeSpan.Zero, TimeSpan.Zero));

    /// <summary>
    /// Three attempts a step or a compensation, the second and third after a back-off (5 s to 10 s, then to 12 s, jittered):
    /// a band no other timer of the run falls in (renewals at 20 s, step timeouts at 30 s), so the driver knows its timers.
    /// </summary>
    protected static readonly RetryPolicy ThreeAttemptsBackingOff = RetryPolicy.Create(r => r.Immediate(0).Delayed(2, TimeSpan.FromSeconds(5), TimeSpan.FromSeconds(12)));

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
    private async Task<IHost> StartHostAsync(string store, string name, TimeProvider clock, IEnumerable<SagaDefinition<Trail>> definitions)
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

    /// <summary>
    /// The hosts' clock: a fake clock that notes every timer whose delay lies in the back-off band of
    /// <see cref="ThreeAttemptsBackingOff"/>, so the driver moves the clock to a back-off's end only once its timer exists.
    /// </summary>
    private sealed class WatchedClock(FakeTimeProvider clock) : TimeProvider
    {
        private readonly object _gate = new();
        private readonly List<(DateTimeOffset Due, Watched Timer)> _backoffs = [];

        public override TimeZoneInfo LocalTimeZone => clock.LocalTimeZone;

        public override long TimestampFrequency => clock.TimestampFrequency;

        public override DateTimeOffset GetUtcNow() => clock.GetUtcNow();

        public override long GetTimestamp() => clock.GetTimestamp();

        /// <summary>The earliest end of a back-off whose timer is live and not due yet; null when none waits.</summary>
        public DateTimeOffset? NextBackoff()
        {
            var now = clock.GetUtcNow();
            lock (_gate)
            {
                return _backoffs.Where(b => !b.Timer.Disposed && b.Due > now).Select(b => (DateTimeOffset?)b.Due).Min();
            }
        }

        public override ITimer CreateTimer(TimerCallback callback, object? state, TimeSpan dueTime, TimeSpan period)
        {
            var timer = new Watched(clock.CreateTimer(callback, state, dueTime, period));
            // A back-off is a Task.Delay, whose timer's state is its task; a lease renewal's timer may fall in the band too.
            if (state is Task && dueTime >= TimeSpan.FromSeconds(5) && dueTime <= TimeSpan.FromSeconds(12))
            {
                lock (_gate)
                {
                    _backoffs.Add((clock.GetUtcNow() + dueTime, timer));
                }
            }

            return timer;
        }

        private sealed class Watched(ITimer inner) : ITimer
        {
            public volatile bool Disposed;

            public bool Change(TimeSpan dueTime, TimeSpan period) => inner.Change(dueTime, period);

            public void Dispose()
            {
                Disposed = true;
                inner.Dispose();
            }

            public ValueTask DisposeAsync()
            {
                Disposed = true;
                return inner.DisposeAsync();
            }
        }
    }
}
