using Herald.EventSourcing;
using Herald.Hosting;
using Herald.Internal;
using Herald.Projections;
using Herald.Reliability.DeadLetters;
using Herald.Transport;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Options;

namespace Herald.AspNetCore.Health;

/// <summary>Runs a probe under the configured timeout; a failure or timeout is the registration's failure status.</summary>
internal static class Probe
{
    public static async Task<HealthCheckResult> RunAsync(
        HealthCheckContext context, TimeSpan timeout, string what, Func<CancellationToken, Task<HealthCheckResult>> probe, CancellationToken cancellationToken)
    {
        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        deadline.CancelAfter(timeout);
        try
        {
            // Waited on up to the deadline, not only told of it: a driver blocked in a synchronous wait (SQLite's busy
            // timeout, a socket without its own timeout) never looks at the token, and the check must still answer.
            return await probe(deadline.Token).WaitAsync(deadline.Token).ConfigureAwait(false);
        }
        catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested)
        {
            return new HealthCheckResult(context.Registration.FailureStatus, $"The {what} did not answer within {timeout.TotalSeconds:0.###} s.");
        }
        catch (Exception ex) when (ex is not OperationCanceledException)
        {
            return new HealthCheckResult(context.Registration.FailureStatus, $"The {what} failed: {ex.GetType().Name}.", ex);
        }
    }
}

/// <summary>Reads the head position of the event store's global log: a cheap round trip to its database.</summary>
internal sealed class EventStoreHealthCheck(IEventStore store, IOptions<HeraldHealthOptions> options) : IHealthCheck
{
    public Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken = default) =>
        Probe.RunAsync(context, options.Value.Timeout, "event store", async token =>
        {
            var head = await store.GetLastPositionAsync(token).ConfigureAwait(false);
            return HealthCheckResult.Healthy($"The event store answers; its log is at position {head}.", new Dictionary<string, object> { ["headPosition"] = head });
        }, cancellationToken);
}

/// <summary>
/// The transport: this host's consumer has started with the host and has not stopped on its own (Unhealthy, naming its queue
/// and the reason, when it has), and (when <see cref="HeraldHealthOptions.ProbeTransport"/>)
/// its endpoint queue can be declared again, a round trip to the broker. A host that does not consume reports only its transport.
/// </summary>
internal sealed class TransportHealthCheck(
    ITransport transport,
    IOptions<HeraldOptions> herald,
    IOptions<HeraldHealthOptions> options,
    IServiceProvider services) : IHealthCheck
{
    public Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken = default)
    {
        var settings = herald.Value;
        var data = new Dictionary<string, object>
        {
            ["transport"] = transport.Name,
            ["endpoint"] = settings.EndpointName,
            ["consumer"] = settings.StartConsumer,
        };
        if (services.GetService<IHostApplicationLifetime>() is { } lifetime && !lifetime.ApplicationStarted.IsCancellationRequested)
        {
            return Task.FromResult(HealthCheckResult.Degraded("The host is still starting: its consumer may not run yet.", data: data));
        }

        if (services.GetService<EndpointConsumerStatus>() is { } status && status.TryGetFault(out var queue, out var reason))
        {
            // The reason's type only, as the probes give: its message may name hosts or credentials, and the log has it.
            data["stoppedQueue"] = queue;
            return Task.FromResult(new HealthCheckResult(
                context.Registration.FailureStatus,
                $"The consumer of '{queue}' stopped without being asked to ({reason.GetType().Name}, see the log): the endpoint no longer consumes.",
                reason,
                data));
        }

        if (!settings.StartConsumer || !options.Value.ProbeTransport)
        {
            return Task.FromResult(HealthCheckResult.Healthy($"Transport '{transport.Name}' is configured; this host does not probe it.", data));
        }

        return Probe.RunAsync(context, options.Value.Timeout, $"transport '{transport.Name}'", async token =>
        {
            await transport.DeclareQueueAsync(settings.EndpointName, token).ConfigureAwait(false);
            return HealthCheckResult.Healthy($"Transport '{transport.Name}' answers for endpoint '{settings.EndpointName}'.", data);
        }, cancellationToken);
    }
}

/// <summary>Every projection's lag and stall, from <see cref="ProjectionManager.GetStatusAsync(CancellationToken)"/>: Degraded when one is stalled or too far behind.</summary>
internal sealed class ProjectionsHealthCheck(IOptions<HeraldHealthOptions> options, IServiceProvider services) : IHealthCheck
{
    public Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken = default)
    {
        if (services.GetService<ProjectionManager>() is not { } manager)
        {
            return Task.FromResult(HealthCheckResult.Healthy("No projections are registered."));
        }

        var maxLag = options.Value.MaxProjectionLag;
        return Probe.RunAsync(context, options.Value.Timeout, "projection status", async token =>
        {
            var statuses = await manager.GetStatusAsync(token).ConfigureAwait(false);
            var data = new Dictionary<string, object>();
            var behind = new List<string>();
            foreach (var status in statuses)
            {
                data[status.Name + ".position"] = status.Position ?? 0;
                data[status.Name + ".lag"] = status.Lag;
                data[status.Name + ".stalled"] = status.IsStalled;
                data[status.Name + ".runningHere"] = status.IsRunningHere;
                if (status.IsStalled)
                {
                    // Not the failure's message: it may name hosts, data or credentials, and the health endpoint is often
                    // open to anyone (the probes give only an exception's type). The log and ProjectionStatus.LastError have it.
                    behind.Add(status.LastError is null ? $"'{status.Name}' is stalled" : $"'{status.Name}' is stalled: its runner failed (see the log)");
                }
                else if (status.Lag > maxLag)
                {
                    behind.Add($"'{status.Name}' is {status.Lag} positions behind (more than {maxLag})");
                }
            }

            data["headPosition"] = statuses.Count > 0 ? statuses.Max(s => s.HeadPosition) : 0L;
            return behind.Count == 0
                ? HealthCheckResult.Healthy($"{statuses.Count} projection(s) within {maxLag} positions of the head.", data)
                : HealthCheckResult.Degraded(string.Join("; ", behind) + ".", data: data);
        }, cancellationToken);
    }
}

/// <summary>Counts the dead letters that failed within the window: Degraded when more than the allowed growth.</summary>
internal sealed class DeadLettersHealthCheck(IDeadLetterStore store, TimeProvider timeProvider, IOptions<HeraldHealthOptions> options) : IHealthCheck
{
    public Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken = default)
    {
        var settings = options.Value;
        return Probe.RunAsync(context, settings.Timeout, "dead-letter store", async token =>
        {
            var since = timeProvider.GetUtcNow() - settings.DeadLetterWindow;
            var total = await store.CountAsync(DeadLetterQuery.All, token).ConfigureAwait(false);
            var recent = await store.CountAsync(new DeadLetterQuery { FailedFrom = since }, token).ConfigureAwait(false);
            var data = new Dictionary<string, object>
            {
                ["total"] = total,
                ["recent"] = recent,
                ["windowSeconds"] = settings.DeadLetterWindow.TotalSeconds,
                ["maxGrowth"] = settings.MaxDeadLetterGrowth,
            };
            return recent > settings.MaxDeadLetterGrowth
                ? HealthCheckResult.Degraded($"{recent} dead letter(s) in the last {settings.DeadLetterWindow}, more than {settings.MaxDeadLetterGrowth}.", data: data)
                : HealthCheckResult.Healthy($"{recent} dead letter(s) in the last {settings.DeadLetterWindow} ({total} in all).", data);
        }, cancellationToken);
    }
}

/// <summary>
/// PINGs every server an adapter registered an <see cref="IServerProbe"/> for (Redis), side by side, each under the timeout: Unhealthy when
/// one does not answer. Healthy when there is none.
/// </summary>
internal sealed class ServersHealthCheck(IEnumerable<IServerProbe> probes, IOptions<HeraldHealthOptions> options) : IHealthCheck
{
    public async Task<HealthCheckResult> CheckHealthAsync(HealthCheckContext context, CancellationToken cancellationToken = default)
    {
        // Probed side by side: one server that does not answer costs the check one timeout, not one per server behind it.
        var probed = await Task.WhenAll(probes.Select(async probe => (probe.Name, Result: await Probe.RunAsync(context, options.Value.Timeout, probe.Name, async token =>
        {
            await probe.ProbeAsync(token).ConfigureAwait(false);
            return HealthCheckResult.Healthy();
        }, cancellationToken).ConfigureAwait(false)))).ConfigureAwait(false);
        var data = new Dictionary<string, object>();
        var failed = new List<HealthCheckResult>();
        foreach (var (name, result) in probed)
        {
            data[name] = result.Status.ToString();
            if (result.Status != HealthStatus.Healthy)
            {
                failed.Add(result);
            }
        }

        return failed.Count == 0
            ? HealthCheckResult.Healthy(data.Count == 0 ? "No other servers to probe." : $"{data.Count} server(s) answer.", data)
            : new HealthCheckResult(context.Registration.FailureStatus, string.Join(" ", failed.Select(f => f.Description)), failed[0].Exception, data);
    }
}
