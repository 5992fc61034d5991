using Herald.Handling;
using Herald.Hosting;
using Herald.Projections;
using Herald.Reliability.Outbox;
using Herald.Sagas;
using Herald.Testing.Internal;
using Herald.Testing.Observing;
using Herald.Testing.Sagas;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using Microsoft.Extensions.Time.Testing;

namespace Herald.Testing;

/// <summary>
/// A Herald host for an application's tests: the in-memory transport and stores, a fake clock the test moves, and
/// everything sent, published, handled and dead-lettered observed, with expectations that wait up to a deadline.
/// Start one with <see cref="StartAsync"/>, or add it to a host of your own with <c>services.AddHeraldTestHarness(...)</c>.
/// </summary>
public sealed class HeraldTestHarness : IAsyncDisposable, IHarnessClock
{
    private static readonly TimeSpan IdlePollInterval = TimeSpan.FromMilliseconds(5);
    private readonly IServiceProvider _services;
    private readonly HeraldTestHarnessOptions _options;
    private IHost? _ownedHost;

    internal HeraldTestHarness(IServiceProvider services, FakeTimeProvider time, IOptions<HeraldTestHarnessOptions> options, ILoggerFactory? loggerFactory)
    {
        _services = services;
        _options = options.Value;
        Time = time;
        Recorder = new HarnessRecorder(services, time, this, loggerFactory);
    }

    /// <summary>The host's services: resolve what a test needs (stores, buses, the user's own services) from here.</summary>
    public IServiceProvider Services => _services;

    /// <summary>The host's clock: Herald takes all its time from it (delays, redeliveries, timeouts), and it moves only when the test advances it.</summary>
    public FakeTimeProvider Time { get; }

    /// <summary>The host's message bus, for sending and publishing as the application would.</summary>
    public IMessageBus Bus => _services.GetRequiredService<IMessageBus>();

    /// <summary>How long an expectation waits when the call names no timeout.</summary>
    public TimeSpan DefaultTimeout => _options.DefaultTimeout;

    /// <summary>Messages sent to queues through the transport, by anyone in the host.</summary>
    public SentMessages Sent => Recorder.Sent;

    /// <summary>Messages published to topics through the transport, by anyone in the host.</summary>
    public SentMessages Published => Recorder.Published;

    /// <summary>Deliveries to this host's endpoints, each with how it ended.</summary>
    public HandledMessages Handled => Recorder.Handled;

    /// <summary>Messages that reached the dead-letter store.</summary>
    public DeadLetteredMessages DeadLettered => Recorder.DeadLettered;

    internal HarnessRecorder Recorder { get; }

    /// <summary>
    /// Builds and starts a host on Herald's in-memory transport and stores with a fake clock, configured by
    /// <paramref name="configure"/> as an application configures <c>AddHerald</c> (handlers, sagas, routes, retries);
    /// <c>h.Services</c> takes the application's own services and <c>h.ConfigureTestHarness(...)</c> the harness's settings.
    /// </summary>
    public static async Task<HeraldTestHarness> StartAsync(Action<HeraldBuilder>? configure = null, CancellationToken cancellationToken = default)
    {
        var builder = new HostApplicationBuilder(new HostApplicationBuilderSettings { DisableDefaults = true });
        builder.Services.AddHeraldTestHarness(configure);
        var host = builder.Build();
        try
        {
            await host.StartAsync(cancellationToken).ConfigureAwait(false);
        }
        catch
        {
            host.Dispose();
            throw;
        }

        var harness = host.Services.GetRequiredService<HeraldTestHarness>();
        harness._ownedHost = host;
        return harness;
    }

    /// <summary>Sends <paramref name="message"/> through the bus (to the queue it is routed to) and returns it as the transport took it.</summary>
    public async Task<SentMessage> SendAsync<TMessage>(TMessage message, DeliveryOptions? options = null, CancellationToken cancellationToken = default)
        where TMessage : notnull
    {
        var capture = HarnessRecorder.Capture();
        await Bus.SendAsync(message, options, cancellationToken).ConfigureAwait(false);
        return capture.Observed ?? throw new InvalidOperationException("The bus sent nothing through the harness's transport; is another transport configured after the harness?");
    }

    /// <summary>Publishes <paramref name="message"/> through the bus (to its topic) and returns it as the transport took it.</summary>
    public async Task<SentMessage> PublishAsync<TMessage>(TMessage message, DeliveryOptions? options = null, CancellationToken cancellationToken = default)
        where TMessage : notnull
    {
        var capture = HarnessRecorder.Capture();
        await Bus.PublishAsync(message, options, cancellationToken).ConfigureAwait(false);
        return capture.Observed ?? throw new InvalidOperationException("The bus published nothing through the harness's transport; is another transport configured after the harness?");
    }

    /// <summary>
    /// Waits until nothing more happens without the clock moving: no delivery runs, none is due now, the outbox holds
    /// nothing unsent, no orchestrated saga run goes on, and every async projection has caught up with the event store.
    /// Messages due later (delays, redeliveries), saga steps' delayed retries and projections' events waiting for a delayed
    /// retry wait for <see cref="Time"/> to be advanced.
    /// </summary>
    /// <exception cref="HarnessAssertionException">The host was still busy at the deadline; the message says with what.</exception>
    public async Task WaitForIdleAsync(TimeSpan? timeout = null, CancellationToken cancellationToken = default)
    {
        var limit = timeout ?? DefaultTimeout;
        var deadline = TimeProvider.System.GetUtcNow() + limit;
        var outbox = _services.GetRequiredService<IOutboxStore>();
        var projections = _services.GetService<ProjectionManager>();
        var tracker = Recorder.Tracker;

        // Orchestrated sagas a handler started in its unit of work run on the host's saga runner, outside any delivery.
        var sagas = _services.GetRequiredService<SagaOrchestrator>().Activity;
        long Version() => tracker.Version + sagas.Version + (projections?.RetryWaits.Version ?? 0);
        bool IsIdle(out string underWay)
        {
            var idle = tracker.IsIdle(out underWay);
            var runs = sagas.Busy(Time.GetUtcNow());
            underWay += $", {runs} orchestrated saga runs under way";
            return idle && runs == 0;
        }

        while (true)
        {
            // Idle twice with nothing in between: a handler that filled the outbox, or a relay that emptied it into the
            // transport, between the two looks moves the version.
            var version = Version();
            if (IsIdle(out var underWay))
            {
                var pending = await outbox.CountPendingAsync(cancellationToken).ConfigureAwait(false);
                var behind = pending == 0 ? await ProjectionBehindAsync(projections, Time.GetUtcNow(), cancellationToken).ConfigureAwait(false) : null;
                if (pending == 0 && behind is null && Version() == version && IsIdle(out _))
                {
                    return;
                }

                underWay = pending > 0 ? $"{pending} messages unsent in the outbox" : behind ?? underWay;
            }

            if (TimeProvider.System.GetUtcNow() > deadline)
            {
                throw new HarnessAssertionException($"The harness did not become idle within {limit}: {underWay}.");
            }

            await Task.Delay(IdlePollInterval, TimeProvider.System, cancellationToken).ConfigureAwait(false);
        }
    }

    // The first async projection whose read models do not yet hold every event of the store, described; null when none.
    // The events a handler appended reach the read models only through them, so a test reading one right after would race.
    // One whose event waits for a delayed retry due later goes on only when the clock moves, as a message waiting for its
    // redelivery: it does not count until that time.
    private static async Task<string?> ProjectionBehindAsync(ProjectionManager? projections, DateTimeOffset now, CancellationToken cancellationToken)
    {
        if (projections is null || projections.Names.Count == 0)
        {
            return null;
        }

        foreach (var status in await projections.GetStatusAsync(cancellationToken).ConfigureAwait(false))
        {
            if (status.Lag > 0 && !projections.RetryWaits.Waits(status.Name, now))
            {
                return $"projection '{status.Name}' at position {status.Position} of the event store's {status.HeadPosition}" +
                    (status.LastError is { } error ? $" (its runner failed: {error})" : string.Empty);
            }
        }

        return null;
    }

    /// <summary>
    /// Moves the fake clock on by <paramref name="by"/> as real time would pass: it stops at each time within it when
    /// something of the host comes due (a delayed message, a redelivery, a saga timeout, a saga step's or a projection
    /// event's delayed retry) and waits there until the host is idle, so what came due ran at its own time, and what that
    /// made due within <paramref name="by"/> ran too, by the time it returns.
    /// </summary>
    /// <exception cref="HarnessAssertionException">The host was still busy, or the clock not through, at the default deadline.</exception>
    public async Task AdvanceTimeAsync(TimeSpan by, CancellationToken cancellationToken = default)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(by, TimeSpan.Zero);
        var target = Time.GetUtcNow() + by;
        var sagas = _services.GetRequiredService<SagaOrchestrator>().Activity;
        var projections = _services.GetService<ProjectionManager>()?.RetryWaits;
        var deadline = TimeProvider.System.GetUtcNow() + DefaultTimeout;
        while (true)
        {
            // One jump to the target would run a redelivery due within it only at the target, and the next one, counted
            // from there, not at all.
            var now = Time.GetUtcNow();
            var step = target;
            foreach (var next in (ReadOnlySpan<DateTimeOffset?>)[Recorder.Tracker.NextDue(now), sagas.NextWake(now), projections?.NextWake(now)])
            {
                if (next < step)
                {
                    step = next.Value;
                }
            }

            if (step > now)
            {
                Time.Advance(step - now);
            }

            try
            {
                // Past the deadline, one look still tells an idle host from a busy one.
                var left = deadline - TimeProvider.System.GetUtcNow();
                await WaitForIdleAsync(left > TimeSpan.Zero ? left : TimeSpan.Zero, cancellationToken).ConfigureAwait(false);
            }
            catch (HarnessAssertionException busy)
            {
                throw new HarnessAssertionException(
                    $"AdvanceTimeAsync({by}) did not finish within {DefaultTimeout}: the fake clock stands at {Time.GetUtcNow():O}, the target is " +
                    $"{target:O}. {busy.Message} It stops at each time something comes due and waits there until the host is idle; to jump " +
                    "to the end at once, call Time.Advance and then WaitForIdleAsync.",
                    busy);
            }

            if (step >= target)
            {
                return;
            }
        }
    }

    /// <summary>
    /// A scenario for the state machine <paramref name="machine"/> (registered in the harness with <c>h.AddSaga(machine)</c>):
    /// given these events, when this message, then this state and these commands.
    /// </summary>
    /// <exception cref="ArgumentException">The host does not run <paramref name="machine"/>: no step could be judged by it.</exception>
    public SagaScenario<TData> Scenario<TData>(SagaStateMachine<TData> machine)
        where TData : class, new()
    {
        ArgumentNullException.ThrowIfNull(machine);

        // Unregistered, its events may still be handled in the host (by another handler), and every step would pass with no instance.
        if (!string.Equals(_services.GetService<SagaStateMachine<TData>>()?.Name, machine.Name, StringComparison.Ordinal))
        {
            throw new ArgumentException(
                $"Saga '{machine.Name}' is not registered in the harness's host, so nothing would handle its events: add it with h.AddSaga(machine) when starting the harness.",
                nameof(machine));
        }

        return new SagaScenario<TData>(this, machine);
    }

    /// <summary>
    /// Runs a new instance of the orchestrated saga <paramref name="definition"/> to its end with every step and
    /// compensation run observed; <paramref name="faults"/> makes chosen steps or compensations fail, to drive the
    /// compensation path without changing the saga's code. Returns once the saga ended and the host is idle.
    /// </summary>
    /// <exception cref="HarnessAssertionException">The saga did not end within the default timeout (a delayed retry waiting on the fake clock).</exception>
    public async Task<SagaRun<TData>> RunSagaAsync<TData>(SagaDefinition<TData> definition, string id, TData data, Action<SagaFaults>? faults = null, CancellationToken cancellationToken = default)
        where TData : class
    {
        ArgumentNullException.ThrowIfNull(definition);
        var injected = new SagaFaults(definition.Steps.Select(s => s.Name));
        faults?.Invoke(injected);
        var observer = new SagaRunObserver<TData>(definition, injected, _services.GetService<ILoggerFactory>());
        var orchestrator = _services.GetRequiredService<SagaOrchestrator>();

        // The resume sweep (a background loop) never takes an instance this process runs: StartAsync claims it here before
        // saving it, so the observed definition is the only one that runs it.
        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        deadline.CancelAfter(DefaultTimeout);
        SagaInstance instance;
        try
        {
            instance = await orchestrator.StartAsync(observer.Definition, id, data, deadline.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (deadline.IsCancellationRequested && !cancellationToken.IsCancellationRequested)
        {
            // The usual cause: a delayed retry waits on the fake clock, which only the test moves.
            throw new HarnessAssertionException(
                $"Saga '{definition.Name}' instance '{id}' did not end within {DefaultTimeout}. A step's delayed retries wait on the harness's " +
                "fake clock: give the step a policy without delayed retries, or start the run without awaiting it and advance Time. " +
                $"Runs so far: {SagaRun<TData>.Describe(observer.Steps)}.");
        }

        await WaitForIdleAsync(cancellationToken: cancellationToken).ConfigureAwait(false);
        // What the steps sent carries the step's idempotency key as its cause; the saga's id as correlation is not enough, for
        // the handlers of those messages carry it on, and a message sent before the run may carry it too.
        var causes = definition.Steps
            .SelectMany(s => new[] { SagaDefinition.StepKey(definition.Name, id, s.Name, isCompensation: false), SagaDefinition.StepKey(definition.Name, id, s.Name, isCompensation: true) })
            .ToHashSet(StringComparer.Ordinal);
        bool Caused(SentMessage m) => m.Envelope.CausationId is { } cause && causes.Contains(cause);
        return new SagaRun<TData>(instance, observer.Steps, [.. Sent.All.Where(Caused)], [.. Published.All.Where(Caused)]);
    }

    /// <summary>Stops and disposes the host when <see cref="StartAsync"/> built it (a host of your own is yours to stop).</summary>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _ownedHost, null) is not { } host)
        {
            return;
        }

        try
        {
            await host.StopAsync(CancellationToken.None).ConfigureAwait(false);
        }
        finally
        {
            if (host is IAsyncDisposable asyncDisposable)
            {
                await asyncDisposable.DisposeAsync().ConfigureAwait(false);
            }
            else
            {
                host.Dispose();
            }
        }
    }
}
