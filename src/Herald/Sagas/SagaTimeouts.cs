using Herald.Handling;
using Herald.Hosting;
using Herald.Messages;
using Herald.Persistence;
using Herald.Transport;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Herald.Sagas;

/// <summary>
/// The timeouts of state-machine saga instances, from outside the saga (an operator, an API): list them, cancel one, or
/// reschedule one. Each change saves the instance with its version check, so it never overwrites a transition that ran
/// meanwhile (a conflict throws <see cref="SagaConcurrencyException"/>; read and try again). A cancelled or rescheduled
/// timeout's earlier delivery is ignored when it arrives; a rescheduled one is sent again in the same unit of work as the
/// save (through the outbox when it is configured, else once the save has committed).
/// </summary>
/// <param name="store">The saga store the instances are loaded from and saved to.</param>
/// <param name="runner">Runs each change in a unit of work, so a rescheduled timeout is sent with the save.</param>
/// <param name="time">The clock a rescheduled timeout's due time is counted from.</param>
public sealed class SagaTimeouts(ISagaStore store, UnitOfWorkRunner runner, TimeProvider time)
{
    private readonly ISagaStore _store = store ?? throw new ArgumentNullException(nameof(store));
    private readonly UnitOfWorkRunner _runner = runner ?? throw new ArgumentNullException(nameof(runner));
    private readonly TimeProvider _time = time ?? throw new ArgumentNullException(nameof(time));

    /// <summary>The timeouts the instance holds, in the order they were scheduled; empty when it holds none or does not exist.</summary>
    public async ValueTask<IReadOnlyList<SagaTimeout>> ListAsync(string sagaName, string id, CancellationToken cancellationToken = default)
    {
        var instance = await _store.LoadAsync(sagaName, id, cancellationToken).ConfigureAwait(false);
        return instance?.Timeouts ?? [];
    }

    /// <summary>
    /// Cancels the timeout <paramref name="name"/> of an instance; false when it holds none of that name. Called from a
    /// handler or a command, the cancellation is part of its unit of work and holds only if that commits.
    /// </summary>
    public async ValueTask<bool> CancelAsync(string sagaName, string id, string name, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(name);
        return await _runner.RunAsync(
            async (services, token) =>
            {
                var instance = await _store.LoadAsync(sagaName, id, token).ConfigureAwait(false);
                if (instance is null || !instance.Timeouts.Any(t => t.Name == name))
                {
                    return false;
                }

                var unitOfWork = services.GetRequiredService<IUnitOfWork>();
                await _store.SaveAsync(instance with { Timeouts = [.. instance.Timeouts.Where(t => t.Name != name)] }, unitOfWork, token).ConfigureAwait(false);
                return true;
            },
            cancellationToken: cancellationToken).ConfigureAwait(false);
    }

    /// <summary>
    /// Moves the timeout <paramref name="name"/> of an instance to fire <paramref name="delay"/> from now instead: its
    /// message is sent again with a new id, and the earlier delivery is ignored (a timeout the sweep sent again counts as
    /// never sent again, so the sweep may send the new one again once). Returns the new timeout, or null when the
    /// instance holds none of that name.
    /// </summary>
    public async ValueTask<SagaTimeout?> RescheduleAsync(string sagaName, string id, string name, TimeSpan delay, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(name);
        ArgumentOutOfRangeException.ThrowIfLessThan(delay, TimeSpan.Zero);
        return await MoveAsync(
                sagaName, id, t => t.Name == name, (t, now, services) => t with { Id = Guid.NewGuid(), DueAt = DueAt(services, sagaName, name, now, delay), ResentAt = null }, cancellationToken)
            .ConfigureAwait(false);
    }

    /// <summary>
    /// Sends the timeout <paramref name="timeoutId"/> again, due now, under its id (so of its two deliveries only the first
    /// handled fires), when the instance still holds it. Without an outbox a crash between a transition's commit and the
    /// timeout's send lost the message, while the instance went on holding the timeout: the resume sweep calls this for a
    /// timeout held well past its due time, once (the timeout it saves records when, in <see cref="SagaTimeout.ResentAt"/>).
    /// </summary>
    internal ValueTask<SagaTimeout?> ResendAsync(string sagaName, string id, Guid timeoutId, CancellationToken cancellationToken) =>
        MoveAsync(sagaName, id, t => t.Id == timeoutId && t.ResentAt is null, (t, now, _) => t with { DueAt = now, ResentAt = now }, cancellationToken);

    // Saves the instance with the timeout `which` picks moved, and sends that timeout's message with the save.
    private async ValueTask<SagaTimeout?> MoveAsync(
        string sagaName, string id, Func<SagaTimeout, bool> which, Func<SagaTimeout, DateTimeOffset, IServiceProvider, SagaTimeout> move, CancellationToken cancellationToken) =>
        await _runner.RunAsync<SagaTimeout?>(
            async (services, token) =>
            {
                var instance = await _store.LoadAsync(sagaName, id, token).ConfigureAwait(false);
                if (instance?.Timeouts.FirstOrDefault(which) is not { } current)
                {
                    return null;
                }

                var registry = services.GetRequiredService<MessageTypeRegistry>();
                var message = services.GetRequiredService<IMessageSerializer>().Deserialize(current.Body, registry.GetByName(current.MessageType).ClrType);
                var moved = move(current, _time.GetUtcNow(), services);
                var unitOfWork = services.GetRequiredService<IUnitOfWork>();
                var bus = services.GetRequiredService<IMessageBus>();
                await SendOnCommitAsync(
                    UnitOfWorkRunner.Current, unitOfWork, services, sagaName, id, moved, _time, (wait, t) => bus.SendAsync(message, Options(moved, wait) with { CorrelationId = id }, t), token)
                    .ConfigureAwait(false);
                await _store.SaveAsync(instance with { Timeouts = [.. instance.Timeouts.Select(t => ReferenceEquals(t, current) ? moved : t)] }, unitOfWork, token).ConfigureAwait(false);
                return moved;
            },
            cancellationToken: cancellationToken).ConfigureAwait(false);

    /// <summary>
    /// The due time of the timeout <paramref name="name"/> scheduled <paramref name="delay"/> from <paramref name="now"/>.
    /// Throws when there is none: a negative delay, or one longer than the transport can hold (its
    /// <see cref="TransportCapabilities.MaxDelay"/>, which the send would refuse, after the transition committed when there
    /// is no outbox) or than a <see cref="DateTimeOffset"/> can reach.
    /// </summary>
    internal static DateTimeOffset DueAt(IServiceProvider services, string sagaName, string name, DateTimeOffset now, TimeSpan delay)
    {
        var transportLimit = services.GetRequiredService<ITransport>().Capabilities.MaxDelay;
        var latest = DateTimeOffset.MaxValue - now;
        var (limit, what) = latest < transportLimit ? (latest, "the latest due time a DateTimeOffset holds") : (transportLimit, "the transport's limit, its Capabilities.MaxDelay");
        if (delay < TimeSpan.Zero || delay > limit)
        {
            throw new ArgumentOutOfRangeException(
                nameof(delay), delay, $"The timeout '{name}' of saga '{sagaName}' asks for a delay of {delay}; it must be between zero and {limit} ({what}). It was not scheduled.");
        }

        return now + delay;
    }

    /// <summary>
    /// Sends a timeout's message so that it cannot arrive before the save that holds it commits: through the outbox of
    /// <paramref name="scope"/> when it has one, else from <paramref name="unitOfWork"/>'s commit. Sent at once, a short
    /// timeout could be handled before the instance held it, be ignored as cancelled, and never fire. <paramref name="send"/>
    /// gets the delay left until the timeout's due time on <paramref name="time"/> when it sends, so a late commit does not
    /// make it fire late.
    /// </summary>
    internal static ValueTask SendOnCommitAsync(
        IUnitOfWorkScope? scope,
        IUnitOfWork unitOfWork,
        IServiceProvider services,
        string sagaName,
        string sagaId,
        SagaTimeout timeout,
        TimeProvider time,
        Func<TimeSpan, CancellationToken, ValueTask> send,
        CancellationToken cancellationToken) =>
        SagaSends.OnCommitAsync(
            scope,
            unitOfWork,
            services,
            token => send(Remaining(timeout, time), token),
            (logger, ex) => Log.SagaTimeoutNotSent(logger, ex, sagaName, sagaId, timeout.Name, timeout.Id),
            cancellationToken);

    // The due time was fixed when the timeout was scheduled; one already past goes at once.
    private static TimeSpan Remaining(SagaTimeout timeout, TimeProvider time)
    {
        var left = timeout.DueAt - time.GetUtcNow();
        return left > TimeSpan.Zero ? left : TimeSpan.Zero;
    }

    /// <summary>How a timeout's message is sent: delayed, carrying the timeout's id.</summary>
    internal static DeliveryOptions Options(SagaTimeout timeout, TimeSpan delay) => new()
    {
        Delay = delay,
        Headers = new Dictionary<string, string>(StringComparer.Ordinal) { [HeaderNames.SagaTimeoutId] = timeout.Id.ToString("D") },
    };
}
