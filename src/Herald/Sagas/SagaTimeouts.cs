using Herald.Handling;
using Herald.Messages;
using Herald.Persistence;
using Microsoft.Extensions.DependencyInjection;

namespace Herald.Sagas;

/// <summary>
/// The timeouts of state-machine saga instances, from outside the saga (an operator, an API): list them, cancel one, or
/// reschedule one. Each change saves the instance with its version check, so it never overwrites a transition that ran
/// meanwhile (a conflict throws <see cref="SagaConcurrencyException"/>; read and try again). A cancelled or rescheduled
/// timeout's earlier delivery is ignored when it arrives; a rescheduled one is sent again in the same unit of work as the
/// save (through the outbox when it is configured).
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
    /// message is sent again with a new id, and the earlier delivery is ignored. Returns the new timeout, or null when the
    /// instance holds none of that name.
    /// </summary>
    public async ValueTask<SagaTimeout?> RescheduleAsync(string sagaName, string id, string name, TimeSpan delay, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(name);
        ArgumentOutOfRangeException.ThrowIfLessThan(delay, TimeSpan.Zero);
        return await _runner.RunAsync<SagaTimeout?>(
            async (services, token) =>
            {
                var instance = await _store.LoadAsync(sagaName, id, token).ConfigureAwait(false);
                if (instance?.Timeouts.FirstOrDefault(t => t.Name == name) is not { } current)
                {
                    return null;
                }

                var registry = services.GetRequiredService<MessageTypeRegistry>();
                var message = services.GetRequiredService<IMessageSerializer>().Deserialize(current.Body, registry.GetByName(current.MessageType).ClrType);
                var moved = current with { Id = Guid.NewGuid(), DueAt = _time.GetUtcNow() + delay };
                await services.GetRequiredService<IMessageBus>()
                    .SendAsync(message, Options(moved, delay) with { CorrelationId = id }, token)
                    .ConfigureAwait(false);
                var unitOfWork = services.GetRequiredService<IUnitOfWork>();
                await _store.SaveAsync(instance with { Timeouts = [.. instance.Timeouts.Select(t => t.Name == name ? moved : t)] }, unitOfWork, token).ConfigureAwait(false);
                return moved;
            },
            cancellationToken: cancellationToken).ConfigureAwait(false);
    }

    /// <summary>How a timeout's message is sent: delayed, carrying the timeout's id.</summary>
    internal static DeliveryOptions Options(SagaTimeout timeout, TimeSpan delay) => new()
    {
        Delay = delay,
        Headers = new Dictionary<string, string>(StringComparer.Ordinal) { [HeaderNames.SagaTimeoutId] = timeout.Id.ToString("D") },
    };
}
