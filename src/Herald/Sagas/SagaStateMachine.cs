namespace Herald.Sagas;

/// <summary>What a state machine does with an event whose instance does not exist: ignore it, dead-letter it, or create the instance.</summary>
public enum MissingInstance
{
    /// <summary>Log it and ack the message.</summary>
    Ignore = 0,

    /// <summary>Dead-letter the message with the reason.</summary>
    DeadLetter = 1,

    /// <summary>
    /// Create the instance through the event's <c>Initially</c> transition: what an event declared with <c>Initially</c>
    /// does (and the only policy such an event accepts). A machine naming it for an event without <c>Initially</c> is refused when built.
    /// </summary>
    Create = 2,
}

/// <summary>
/// A saga as a persisted state machine: events correlate to an instance by a property, transitions move it between
/// named states and run actions (send commands, publish events), and final states end it. Only the events declared with
/// <c>Initially</c> create an instance. Build one with <see cref="SagaStateMachine.Create{TData}"/>; it is checked when
/// built (no starting event, an event without correlation, a state with no way in, a target state that is neither
/// handled nor final), so a bad machine fails at configuration.
/// </summary>
/// <typeparam name="TData">The instance's data, persisted as JSON with its state.</typeparam>
public sealed class SagaStateMachine<TData>
    where TData : class, new()
{
    internal SagaStateMachine(
        string name,
        IReadOnlyDictionary<Type, SagaEventRule> events,
        IReadOnlyDictionary<Type, SagaTransition<TData>> initially,
        IReadOnlyDictionary<(string State, Type Event), SagaTransition<TData>> transitions,
        IReadOnlySet<string> states,
        IReadOnlySet<string> finalStates)
    {
        Name = name;
        Events = events;
        Initially = initially;
        Transitions = transitions;
        States = states;
        FinalStates = finalStates;
    }

    /// <summary>The saga's name: the <see cref="SagaInstance.SagaType"/> of its instances.</summary>
    public string Name { get; }

    /// <summary>The states that end an instance.</summary>
    public IReadOnlySet<string> FinalStates { get; }

    internal IReadOnlyDictionary<Type, SagaEventRule> Events { get; }

    internal IReadOnlyDictionary<Type, SagaTransition<TData>> Initially { get; }

    internal IReadOnlyDictionary<(string State, Type Event), SagaTransition<TData>> Transitions { get; }

    /// <summary>Every state the machine declares (with <c>During</c> or <c>Final</c>).</summary>
    internal IReadOnlySet<string> States { get; }
}

/// <summary>How an event type finds its instance, and what happens when there is none (null until built: the default for the event).</summary>
internal sealed record SagaEventRule(Func<object, string?> Correlate, MissingInstance? WhenMissing);

/// <summary>A transition: the action to run and the state to move to.</summary>
internal sealed record SagaTransition<TData>(string Target, Func<SagaEventContext<TData>, object, ValueTask>? Action)
    where TData : class, new();

/// <summary>Builds state machines.</summary>
public static class SagaStateMachine
{
    /// <summary>Builds the state machine named <paramref name="name"/> from what <paramref name="configure"/> declares.</summary>
    /// <exception cref="InvalidSagaDefinitionException">The machine cannot run; the message lists every problem.</exception>
    public static SagaStateMachine<TData> Create<TData>(string name, Action<SagaStateMachineBuilder<TData>> configure)
        where TData : class, new()
    {
        ArgumentNullException.ThrowIfNull(configure);
        var builder = new SagaStateMachineBuilder<TData>();
        configure(builder);
        return builder.Build(name);
    }
}

/// <summary>Declares a state machine's correlations, starting events, transitions per state and final states.</summary>
/// <typeparam name="TData">The instance's data.</typeparam>
public sealed class SagaStateMachineBuilder<TData>
    where TData : class, new()
{
    private readonly Dictionary<Type, SagaEventRule> _events = [];
    private readonly Dictionary<Type, SagaTransition<TData>> _initially = [];
    private readonly Dictionary<(string, Type), SagaTransition<TData>> _transitions = [];
    private readonly HashSet<string> _during = new(StringComparer.Ordinal);
    private readonly HashSet<string> _final = new(StringComparer.Ordinal);
    private readonly List<string> _problems = [];

    internal SagaStateMachineBuilder()
    {
    }

    /// <summary>
    /// How an event of type <typeparamref name="TEvent"/> finds its instance: the id <paramref name="by"/> returns (a null
    /// or blank id, or the empty GUID, dead-letters the message); <paramref name="whenMissing"/> says what happens when no instance has it: by
    /// default <see cref="MissingInstance.Create"/> for an event declared with <c>Initially</c> and
    /// <see cref="MissingInstance.Ignore"/> for any other. A policy that contradicts <c>Initially</c> (creating without it, or
    /// ignoring or dead-lettering an event that starts the machine) is refused when the machine is built.
    /// </summary>
    public SagaStateMachineBuilder<TData> Correlate<TEvent>(Func<TEvent, string?> by, MissingInstance? whenMissing = null)
        where TEvent : notnull
    {
        ArgumentNullException.ThrowIfNull(by);
        if (!_events.TryAdd(typeof(TEvent), new SagaEventRule(e => by((TEvent)e), whenMissing)))
        {
            _problems.Add($"Event {typeof(TEvent).Name} is correlated more than once.");
        }

        return this;
    }

    /// <summary>
    /// As <see cref="Correlate{TEvent}(Func{TEvent, string?}, MissingInstance?)"/>, for events that carry their instance's id as
    /// a <see cref="Guid"/>: the instance id is the GUID in its "D" form (lower case, with hyphens), so an id given elsewhere as
    /// <c>guid.ToString()</c> names the same instance. The empty GUID dead-letters the message.
    /// </summary>
    public SagaStateMachineBuilder<TData> Correlate<TEvent>(Func<TEvent, Guid> by, MissingInstance? whenMissing = null)
        where TEvent : notnull
    {
        ArgumentNullException.ThrowIfNull(by);
        return Correlate<TEvent>(e => by(e).ToString("D"), whenMissing);
    }

    /// <summary>Declares that <typeparamref name="TEvent"/> creates an instance, runs <paramref name="action"/> and moves it to <paramref name="then"/>.</summary>
    public SagaStateMachineBuilder<TData> Initially<TEvent>(string then, Func<SagaEventContext<TData>, TEvent, ValueTask>? action = null)
        where TEvent : notnull
    {
        if (!_initially.TryAdd(typeof(TEvent), Transition(then, action)))
        {
            _problems.Add($"Event {typeof(TEvent).Name} starts the machine more than once.");
        }

        return this;
    }

    /// <summary>Declares the transitions out of <paramref name="state"/>.</summary>
    public SagaStateMachineBuilder<TData> During(string state, Action<SagaStateBuilder<TData>> transitions)
    {
        ArgumentNullException.ThrowIfNull(transitions);
        if (string.IsNullOrWhiteSpace(state))
        {
            _problems.Add("A state has no name.");
            return this;
        }

        if (!_during.Add(state))
        {
            _problems.Add($"State '{state}' is declared more than once.");
        }

        transitions(new SagaStateBuilder<TData>(this, state));
        return this;
    }

    /// <summary>Declares the states that end an instance.</summary>
    public SagaStateMachineBuilder<TData> Final(params string[] states)
    {
        ArgumentNullException.ThrowIfNull(states);
        foreach (var state in states)
        {
            _final.Add(state);
        }

        return this;
    }

    internal SagaStateMachine<TData> Build(string name)
    {
        var problems = new List<string>(_problems);
        if (string.IsNullOrWhiteSpace(name))
        {
            problems.Add("The machine has no name.");
        }

        if (_initially.Count == 0)
        {
            problems.Add("No event starts the machine; declare one with Initially.");
        }

        var used = _initially.Keys.Concat(_transitions.Keys.Select(k => k.Item2)).Distinct();
        problems.AddRange(used.Where(e => !_events.ContainsKey(e)).Select(e => $"Event {e.Name} has no correlation; declare it with Correlate."));

        // The missing-instance policy of each event, checked against Initially: only a starting event creates an instance.
        var events = new Dictionary<Type, SagaEventRule>();
        foreach (var (type, rule) in _events)
        {
            var starts = _initially.ContainsKey(type);
            var policy = rule.WhenMissing ?? (starts ? MissingInstance.Create : MissingInstance.Ignore);
            if (policy == MissingInstance.Create && !starts)
            {
                problems.Add($"Event {type.Name} is to create missing instances but has no Initially transition to create them with.");
            }
            else if (policy != MissingInstance.Create && starts)
            {
                problems.Add($"Event {type.Name} starts the machine (Initially) but is told to {(policy == MissingInstance.Ignore ? "ignore" : "dead-letter")} a missing instance; leave its policy unset or use Create.");
            }

            events[type] = rule with { WhenMissing = policy };
        }

        foreach (var state in _during.Where(_final.Contains))
        {
            problems.Add($"State '{state}' is final and cannot have transitions.");
        }

        var targets = _initially.Values.Concat(_transitions.Values).Select(t => t.Target).Distinct(StringComparer.Ordinal);
        problems.AddRange(targets.Where(t => !_during.Contains(t) && !_final.Contains(t)).Select(t => $"State '{t}' is entered but has no transitions and is not final."));

        // Every declared state must be reachable from a starting event.
        var reached = new HashSet<string>(_initially.Values.Select(t => t.Target), StringComparer.Ordinal);
        var frontier = new Queue<string>(reached);
        while (frontier.TryDequeue(out var state))
        {
            foreach (var ((from, _), transition) in _transitions)
            {
                if (from == state && reached.Add(transition.Target))
                {
                    frontier.Enqueue(transition.Target);
                }
            }
        }

        problems.AddRange(_during.Concat(_final).Distinct(StringComparer.Ordinal).Where(s => !reached.Contains(s)).Select(s => $"State '{s}' is unreachable."));
        if (problems.Count > 0)
        {
            throw new InvalidSagaDefinitionException(name, problems);
        }

        return new SagaStateMachine<TData>(name, events, _initially, _transitions, new HashSet<string>(_during.Concat(_final), StringComparer.Ordinal), _final);
    }

    internal void AddTransition<TEvent>(string state, string then, Func<SagaEventContext<TData>, TEvent, ValueTask>? action)
    {
        if (!_transitions.TryAdd((state, typeof(TEvent)), Transition(then, action)))
        {
            _problems.Add($"State '{state}' handles {typeof(TEvent).Name} more than once.");
        }
    }

    private SagaTransition<TData> Transition<TEvent>(string then, Func<SagaEventContext<TData>, TEvent, ValueTask>? action)
    {
        if (string.IsNullOrWhiteSpace(then))
        {
            _problems.Add($"A transition on {typeof(TEvent).Name} has no target state.");
        }

        return new SagaTransition<TData>(then, action is null ? null : (context, e) => action(context, (TEvent)e));
    }
}

/// <summary>Declares the transitions out of one state.</summary>
/// <typeparam name="TData">The instance's data.</typeparam>
public sealed class SagaStateBuilder<TData>
    where TData : class, new()
{
    private readonly SagaStateMachineBuilder<TData> _machine;
    private readonly string _state;

    internal SagaStateBuilder(SagaStateMachineBuilder<TData> machine, string state)
    {
        _machine = machine;
        _state = state;
    }

    /// <summary>On <typeparamref name="TEvent"/> in this state: run <paramref name="action"/> and move to <paramref name="then"/> (which may be this state).</summary>
    public SagaStateBuilder<TData> When<TEvent>(string then, Func<SagaEventContext<TData>, TEvent, ValueTask>? action = null)
        where TEvent : notnull
    {
        _machine.AddTransition(_state, then, action);
        return this;
    }
}
