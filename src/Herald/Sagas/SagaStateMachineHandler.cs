using Herald.Handling;
using Herald.Hosting;
using Herald.Messages;
using Microsoft.Extensions.Logging;

namespace Herald.Sagas;

/// <summary>
/// Handles one event type for one state machine: finds the instance by the event's correlation, runs the transition of
/// its state, and saves the new state in the message's unit of work, so the state, the messages the action sent (through
/// the outbox) and the inbox mark commit together. A concurrent change of the instance fails that commit with a
/// <see cref="SagaConcurrencyException"/>, and the message runs again at once against the fresh state (RetryStep).
/// </summary>
internal sealed class SagaStateMachineHandler<TData, TEvent>(SagaStateMachine<TData> machine, ISagaStore store, ILogger<SagaStateMachine<TData>> logger)
    : IMessageHandler<TEvent>
    where TData : class, new()
    where TEvent : notnull
{
    public async ValueTask HandleAsync(TEvent message, MessageContext context, CancellationToken cancellationToken)
    {
        var rule = machine.Events[typeof(TEvent)];
        var id = Correlate(rule, message);
        if (string.IsNullOrWhiteSpace(id) || IsEmptyGuid(id))
        {
            // The empty GUID is what a message missing its id correlates by (its default, formatted): taken as an id, every
            // such message would share one instance.
            throw new SagaMessageRejectedException($"{typeof(TEvent).Name} has no correlation id for saga '{machine.Name}' (it correlates to '{id}').");
        }

        try
        {
            SagaValidation.ValidateKey(machine.Name, id);
        }
        catch (ArgumentException refused)
        {
            // Too long, or cut inside an emoji: every attempt would fail the same way in the store.
            throw new SagaMessageRejectedException($"{typeof(TEvent).Name} has a correlation id that cannot be an instance id of saga '{machine.Name}': {refused.Message}", refused);
        }

        var instance = await store.LoadAsync(machine.Name, id, cancellationToken).ConfigureAwait(false);
        Guid? timeoutId = null;
        if (context.Envelope.Headers.TryGetValue(HeaderNames.SagaTimeoutId, out var timeoutHeader))
        {
            // A timeout fires only while the instance still holds it: cancelled, rescheduled (a new id) or finished, it
            // is ignored. A header that is not an id is not from Herald, and is refused.
            if (!Guid.TryParse(timeoutHeader, out var parsed))
            {
                throw new SagaMessageRejectedException($"{typeof(TEvent).Name} for saga '{machine.Name}' carries a saga timeout id that is not a GUID: '{timeoutHeader}'.");
            }

            if (instance is null || instance.IsFinished || !instance.Timeouts.Any(t => t.Id == parsed))
            {
                Log.SagaEventIgnored(logger, machine.Name, id, typeof(TEvent).Name, "timeout cancelled, rescheduled or its instance finished");
                return;
            }

            timeoutId = parsed;
        }

        SagaTransition<TData>? transition;
        TData data;
        if (instance is null)
        {
            // Build checked that Create goes with an Initially transition, and that every starting event creates.
            if (rule.WhenMissing != MissingInstance.Create || !machine.Initially.TryGetValue(typeof(TEvent), out transition))
            {
                if (rule.WhenMissing == MissingInstance.DeadLetter)
                {
                    throw new SagaMessageRejectedException($"Saga '{machine.Name}' has no instance '{id}' for {typeof(TEvent).Name}, and {typeof(TEvent).Name} does not start one.");
                }

                Log.SagaEventIgnored(logger, machine.Name, id, typeof(TEvent).Name, "no instance");
                return;
            }

            instance = new SagaInstance { SagaType = machine.Name, Id = id, Status = SagaStatus.Running };
            data = new TData();
        }
        else if (!instance.IsFinished && instance.State is { } unknown && !machine.States.Contains(unknown))
        {
            // Saved by an earlier machine (the state renamed or removed since): ignored, this event and every later one
            // would be lost, and the instance would never move on. Dead-lettered, it can be retried once a machine that
            // declares the state is deployed.
            throw new SagaMessageRejectedException(
                $"Saga '{machine.Name}' instance '{id}' is in state '{unknown}', which the machine does not declare (renamed or removed since the instance was saved); {typeof(TEvent).Name} cannot be handled until a machine that declares it runs.");
        }
        else if (instance.IsFinished || instance.State is null || !machine.Transitions.TryGetValue((instance.State, typeof(TEvent)), out transition))
        {
            // Events a state does not expect (a late duplicate, an out-of-order reply) change nothing.
            Log.SagaEventIgnored(logger, machine.Name, id, typeof(TEvent).Name, instance.IsFinished ? "instance finished" : $"not handled in state '{instance.State}'");
            if (timeoutId is { } unhandled)
            {
                // The timeout fired, into nothing: still held, it would be listed as pending and a reschedule would send
                // it again.
                await store.SaveAsync(instance with { Timeouts = [.. instance.Timeouts.Where(t => t.Id != unhandled)] }, context.UnitOfWork, cancellationToken)
                    .ConfigureAwait(false);
            }

            return;
        }
        else
        {
            data = Read(instance);
        }

        var events = new SagaEventContext<TData>(machine.Name, id, instance.Version == 0 ? null : instance.State, data, context, instance.Timeouts);
        if (timeoutId is { } fired)
        {
            events.Fired(fired);
        }

        if (transition.Action is { } action)
        {
            await action(events, message).ConfigureAwait(false);
        }

        var final = machine.FinalStates.Contains(transition.Target);
        await store.SaveAsync(
            instance with
            {
                State = transition.Target,
                Status = final ? SagaStatus.Completed : SagaStatus.Running,
                Data = SagaData.Serialize(events.Data),

                // A finished instance holds no timeout: whatever is still scheduled will find nothing to fire.
                Timeouts = final ? [] : events.Timeouts,
            },
            context.UnitOfWork,
            cancellationToken).ConfigureAwait(false);
    }

    // The empty GUID in any format Guid parses ("D", "N", "B", "P"): 32 to 38 characters, so other ids are not parsed.
    private static bool IsEmptyGuid(string id) =>
        id.Length is >= 32 and <= 38 && Guid.TryParse(id, out var parsed) && parsed == Guid.Empty;

    // Data stored by an earlier shape of TData reads the same on every attempt: the message is dead-lettered at once.
    private static TData Read(SagaInstance instance)
    {
        try
        {
            return SagaData.Read<TData>(instance);
        }
        catch (SagaDataUnreadableException unreadable)
        {
            throw new SagaMessageRejectedException(unreadable.Message, unreadable);
        }
    }

    // A correlation is a function of the message alone: one that throws (it reads through a property the message lacks)
    // throws on every attempt, so the message is dead-lettered at once, the reason naming the event and the saga.
    private string? Correlate(SagaEventRule rule, TEvent message)
    {
        try
        {
            return rule.Correlate(message);
        }
#pragma warning disable CA1031 // Whatever the user's correlation throws, the reason goes to the dead letter with it.
        catch (Exception ex)
#pragma warning restore CA1031
        {
            throw new SagaMessageRejectedException($"The correlation of {typeof(TEvent).Name} for saga '{machine.Name}' failed: {ex.GetType().Name}: {ex.Message}", ex);
        }
    }
}
