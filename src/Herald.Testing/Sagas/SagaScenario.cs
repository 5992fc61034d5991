using Herald.Hosting;
using Herald.Sagas;
using Herald.Testing.Observing;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Options;

namespace Herald.Testing.Sagas;

/// <summary>
/// "Given these events, when this message, then this state and these commands" for a state-machine saga registered in
/// the harness. Every message goes through the host's real pipeline (transport, unit of work, saga store), one at a time.
/// Each step waits for, and judges, the message's delivery to the host's endpoint, where the saga's handlers run; a
/// consumer of the same message on another queue of the host neither ends the wait nor decides the outcome.
/// </summary>
/// <typeparam name="TData">The saga's data.</typeparam>
public sealed class SagaScenario<TData>
    where TData : class, new()
{
    private readonly HeraldTestHarness _harness;
    private readonly SagaStateMachine<TData> _machine;

    // The queue the host's endpoint consumes: AddSaga registers the machine's handlers there, beside every other handler.
    private readonly string _endpoint;

    internal SagaScenario(HeraldTestHarness harness, SagaStateMachine<TData> machine)
    {
        _harness = harness;
        _machine = machine;
        _endpoint = harness.Services.GetRequiredService<IOptions<HeraldOptions>>().Value.EndpointName;
    }

    /// <summary>
    /// Publishes each event in turn and waits until it is handled, so the saga stands where they lead before the message
    /// under test arrives.
    /// </summary>
    /// <exception cref="HarnessAssertionException">
    /// An event was dead-lettered or still failing (its inner exception is what the handler threw last), or not handled in time.
    /// </exception>
    public async Task GivenAsync(IEnumerable<object> events, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(events);
        foreach (var message in events)
        {
            var handled = await HandleAsync(message, cancellationToken).ConfigureAwait(false);
            if (handled.Failed)
            {
                throw NotHandled("Given", message, handled, hint: null);
            }
        }

        await _harness.WaitForIdleAsync(cancellationToken: cancellationToken).ConfigureAwait(false);
    }

    /// <summary>
    /// Publishes <paramref name="message"/>, waits until it is handled and the host is idle, and returns what it led to:
    /// the saga instance it correlates to, and the messages sent and published because of it.
    /// </summary>
    /// <exception cref="HarnessAssertionException">
    /// The message was dead-lettered, or failed and waits for a delayed redelivery (its inner exception is what the
    /// handler threw last; <see cref="WhenFailingAsync"/> asserts such a failure instead), or was not handled in time.
    /// </exception>
    public async Task<SagaScenarioResult<TData>> WhenAsync(object message, CancellationToken cancellationToken = default)
    {
        var handled = await HandleAsync(message, cancellationToken).ConfigureAwait(false);
        return handled.Failed
            ? throw NotHandled("When", message, handled, hint: " To assert that it fails, call WhenFailingAsync.")
            : await ResultAsync(message, handled, cancellationToken).ConfigureAwait(false);
    }

    /// <summary>
    /// Publishes <paramref name="message"/> expecting its handling to fail: waits until it is dead-lettered, or failed and
    /// waits for a delayed redelivery (the clock is not moved), and the host is idle, and returns what it led to, with
    /// <see cref="SagaScenarioResult{TData}.Handled"/> holding the outcome and what the handler threw.
    /// </summary>
    /// <exception cref="HarnessAssertionException">The message was handled (or skipped), or not handled in time.</exception>
    public async Task<SagaScenarioResult<TData>> WhenFailingAsync(object message, CancellationToken cancellationToken = default)
    {
        var handled = await HandleAsync(message, cancellationToken).ConfigureAwait(false);
        return handled.Failed
            ? await ResultAsync(message, handled, cancellationToken).ConfigureAwait(false)
            : throw new HarnessAssertionException($"Expected {message.GetType().Name} to fail, but it was handled: {handled}.");
    }

    /// <summary>Loads the instance with <paramref name="id"/> from the host's saga store; null when there is none.</summary>
    public async Task<SagaState<TData>?> LoadAsync(string id, CancellationToken cancellationToken = default)
    {
        var store = _harness.Services.GetRequiredService<ISagaStore>();
        var instance = await store.LoadAsync(_machine.Name, id, cancellationToken).ConfigureAwait(false);
        return instance is null ? null : new SagaState<TData>(instance, SagaData.Deserialize<TData>(instance.Data));
    }

    private static HarnessAssertionException NotHandled(string step, object message, HandledMessage handled, string? hint) =>
        new($"{step} {message.GetType().Name} was not handled: {handled}.{hint}", handled.LastFailure);

    private async Task<SagaScenarioResult<TData>> ResultAsync(object message, HandledMessage handled, CancellationToken cancellationToken)
    {
        await _harness.WaitForIdleAsync(cancellationToken: cancellationToken).ConfigureAwait(false);
        var cause = handled.Envelope.MessageId.ToString();
        bool Caused(SentMessage m) => string.Equals(m.Envelope.CausationId, cause, StringComparison.Ordinal);
        var saga = await LoadAsync(Correlate(message), cancellationToken).ConfigureAwait(false);
        return new SagaScenarioResult<TData>(_machine.Name, handled, saga, [.. _harness.Sent.All.Where(Caused)], [.. _harness.Published.All.Where(Caused)]);
    }

    private async Task<HandledMessage> HandleAsync(object message, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(message);
        Correlate(message);
        var published = await _harness.PublishAsync(message, cancellationToken: cancellationToken).ConfigureAwait(false);
        return await _harness.Handled.ExpectDeliveredAsync(published.Envelope.MessageId, message.GetType().Name, _endpoint, cancellationToken).ConfigureAwait(false);
    }

    // The instance id the machine itself finds for the message, so a scenario never repeats the correlation.
    private string Correlate(object message) =>
        _machine.Events.TryGetValue(message.GetType(), out var rule)
            ? rule.Correlate(message) ?? string.Empty
            : throw new ArgumentException($"{message.GetType().Name} is not an event of saga '{_machine.Name}'; it correlates {string.Join(", ", _machine.Events.Keys.Select(t => t.Name))}.", nameof(message));
}

/// <summary>A saga instance as stored, with its data decoded.</summary>
/// <typeparam name="TData">The saga's data.</typeparam>
public sealed class SagaState<TData>
    where TData : class
{
    internal SagaState(SagaInstance instance, TData data)
    {
        Instance = instance;
        Data = data;
    }

    /// <summary>The stored instance (status, state, completed steps, error, version).</summary>
    public SagaInstance Instance { get; }

    /// <summary>The instance's data.</summary>
    public TData Data { get; }

    /// <summary>The state-machine state, or the step an orchestrated saga is at.</summary>
    public string? State => Instance.State;

    /// <summary>Where the instance stands.</summary>
    public SagaStatus Status => Instance.Status;
}

/// <summary>What the message under test led to: how it was handled, where the saga stands, and what was sent and published because of it.</summary>
/// <typeparam name="TData">The saga's data.</typeparam>
public sealed class SagaScenarioResult<TData>
    where TData : class
{
    private readonly string _sagaName;

    internal SagaScenarioResult(string sagaName, HandledMessage handled, SagaState<TData>? saga, IReadOnlyList<SentMessage> sent, IReadOnlyList<SentMessage> published)
    {
        _sagaName = sagaName;
        Handled = handled;
        Saga = saga;
        Sent = sent;
        Published = published;
    }

    /// <summary>How the message's delivery to the host's endpoint, where the saga's handlers run, ended.</summary>
    public HandledMessage Handled { get; }

    /// <summary>The instance the message correlates to, as stored after it; null when there is none.</summary>
    public SagaState<TData>? Saga { get; }

    /// <summary>The messages sent to queues because of the message (their causation is its id).</summary>
    public IReadOnlyList<SentMessage> Sent { get; }

    /// <summary>The messages published because of the message.</summary>
    public IReadOnlyList<SentMessage> Published { get; }

    /// <summary>Checks that the instance exists and is in <paramref name="state"/>; returns it.</summary>
    /// <exception cref="HarnessAssertionException">There is no instance, or it is in another state.</exception>
    public SagaState<TData> ExpectState(string state)
    {
        if (Saga is not { } saga)
        {
            throw new HarnessAssertionException($"Expected saga '{_sagaName}' in state '{state}', but there is no instance ({Handled}).");
        }

        if (!string.Equals(saga.State, state, StringComparison.Ordinal))
        {
            throw new HarnessAssertionException($"Expected saga '{_sagaName}' instance '{saga.Instance.Id}' in state '{state}', but it is in '{saga.State ?? "(none)"}' ({saga.Status}).");
        }

        return saga;
    }

    /// <summary>Checks that the message sent exactly one <typeparamref name="TMessage"/> matching <paramref name="where"/>; returns it.</summary>
    /// <exception cref="HarnessAssertionException">None or more than one was sent.</exception>
    public TMessage ExpectSent<TMessage>(Func<TMessage, bool>? where = null) => Single(Sent, "sent", where);

    /// <summary>Checks that the message published exactly one <typeparamref name="TMessage"/> matching <paramref name="where"/>; returns it.</summary>
    /// <exception cref="HarnessAssertionException">None or more than one was published.</exception>
    public TMessage ExpectPublished<TMessage>(Func<TMessage, bool>? where = null) => Single(Published, "published", where);

    /// <summary>Checks that the message sent and published nothing.</summary>
    /// <exception cref="HarnessAssertionException">Something was sent or published.</exception>
    public void ExpectNothingSent()
    {
        if (Sent.Count + Published.Count > 0)
        {
            throw new HarnessAssertionException($"Expected nothing sent or published, but observed: {string.Join("; ", Sent.Concat(Published).Select(m => m.ToString()))}.");
        }
    }

    internal static TMessage Single<TMessage>(IReadOnlyList<SentMessage> messages, string kind, Func<TMessage, bool>? where)
    {
        var matches = messages.Select(m => m.Message).OfType<TMessage>().Where(m => where?.Invoke(m) ?? true).ToList();
        return matches.Count == 1
            ? matches[0]
            : throw new HarnessAssertionException(
                $"Expected one {kind} {typeof(TMessage).Name}{(where is null ? string.Empty : " matching the condition")}, but found {matches.Count}. " +
                $"All {kind}: {(messages.Count == 0 ? "nothing" : string.Join("; ", messages.Select(m => m.ToString())))}.");
    }
}
