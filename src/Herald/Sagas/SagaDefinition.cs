using Herald.Reliability.Retry;

namespace Herald.Sagas;

/// <summary>
/// An orchestrated saga: an ordered list of steps, each with an action and the compensation that undoes it. When a step
/// fails (after its retries), the compensations of the steps that completed run in reverse order. Build one with
/// <see cref="SagaDefinition.Create{TData}"/>; it is checked when built, so a bad definition fails at configuration.
/// </summary>
/// <typeparam name="TData">The saga's data, persisted (as JSON) with the instance after every step.</typeparam>
public sealed class SagaDefinition<TData>
    where TData : class
{
    internal SagaDefinition(string name, IReadOnlyList<SagaStep<TData>> steps)
    {
        Name = name;
        Steps = steps;
    }

    /// <summary>The saga's name: the <see cref="SagaInstance.SagaType"/> of its instances.</summary>
    public string Name { get; }

    /// <summary>The steps, in the order they run.</summary>
    public IReadOnlyList<SagaStep<TData>> Steps { get; }

    internal int IndexOf(string stepName)
    {
        for (var i = 0; i < Steps.Count; i++)
        {
            if (string.Equals(Steps[i].Name, stepName, StringComparison.Ordinal))
            {
                return i;
            }
        }

        return -1;
    }
}

/// <summary>Builds saga definitions.</summary>
public static class SagaDefinition
{
    /// <summary>Builds a saga named <paramref name="name"/> from the steps <paramref name="configure"/> adds.</summary>
    /// <exception cref="InvalidSagaDefinitionException">The definition has no steps, a blank or duplicate step name, or a non-positive timeout.</exception>
    public static SagaDefinition<TData> Create<TData>(string name, Action<SagaDefinitionBuilder<TData>> configure)
        where TData : class
    {
        ArgumentNullException.ThrowIfNull(configure);
        var builder = new SagaDefinitionBuilder<TData>();
        configure(builder);
        return builder.Build(name);
    }

    /// <summary>The idempotency key of a run of a step (or its compensation) of an instance: the causation of what it sends.</summary>
    internal static string StepKey(string sagaName, string sagaId, string stepName, bool isCompensation) =>
        $"{sagaName}/{sagaId}/{stepName}" + (isCompensation ? "/compensate" : string.Empty);
}

/// <summary>One step of an orchestrated saga.</summary>
/// <typeparam name="TData">The saga's data.</typeparam>
public sealed class SagaStep<TData>
    where TData : class
{
    internal SagaStep(string name, Func<SagaStepContext<TData>, ValueTask> execute, Func<SagaStepContext<TData>, ValueTask>? compensate, RetryPolicy retry, TimeSpan? timeout)
    {
        Name = name;
        Execute = execute;
        Compensate = compensate;
        Retry = retry;
        Timeout = timeout;
    }

    /// <summary>The step's name, unique in its saga; part of its idempotency key.</summary>
    public string Name { get; }

    /// <summary>What the step does.</summary>
    public Func<SagaStepContext<TData>, ValueTask> Execute { get; }

    /// <summary>What undoes the step once it completed; null when there is nothing to undo.</summary>
    public Func<SagaStepContext<TData>, ValueTask>? Compensate { get; }

    /// <summary>How a failing run of the step (or of its compensation) is retried before the step counts as failed.</summary>
    public RetryPolicy Retry { get; }

    /// <summary>How long one run of the step may take before it is cancelled and counts as failed; null for no limit.</summary>
    public TimeSpan? Timeout { get; }
}

/// <summary>Adds the steps of a saga definition, in order.</summary>
/// <typeparam name="TData">The saga's data.</typeparam>
public sealed class SagaDefinitionBuilder<TData>
    where TData : class
{
    // The steps as added; Build checks them (a null name or action from a caller without nullable checks included) before a definition takes them.
    private readonly List<SagaStep<TData>> _steps = [];

    internal SagaDefinitionBuilder()
    {
    }

    /// <summary>Adds the next step.</summary>
    /// <param name="name">The step's name, unique in the saga.</param>
    /// <param name="execute">What the step does. Writes it makes through the context's services join the step's unit of work, which commits with the saga's progress.</param>
    /// <param name="compensate">What undoes the step; null when there is nothing to undo.</param>
    /// <param name="retry">How a failing run is retried (also used for the compensation); <see cref="RetryPolicy.Default"/> when null.</param>
    /// <param name="timeout">How long one run may take; no limit when null.</param>
    public SagaDefinitionBuilder<TData> Step(
        string name,
        Func<SagaStepContext<TData>, ValueTask> execute,
        Func<SagaStepContext<TData>, ValueTask>? compensate = null,
        RetryPolicy? retry = null,
        TimeSpan? timeout = null)
    {
        _steps.Add(new SagaStep<TData>(name, execute, compensate, retry ?? RetryPolicy.Default, timeout));
        return this;
    }

    internal SagaDefinition<TData> Build(string name)
    {
        var problems = new List<string>();
        if (string.IsNullOrWhiteSpace(name))
        {
            problems.Add("The saga has no name.");
        }
        else if (name.Length > SagaValidation.MaxKeyLength)
        {
            problems.Add($"The saga's name is longer than {SagaValidation.MaxKeyLength} characters.");
        }

        if (_steps.Count == 0)
        {
            problems.Add("The saga has no steps.");
        }

        var seen = new HashSet<string>(StringComparer.Ordinal);
        for (var i = 0; i < _steps.Count; i++)
        {
            var step = _steps[i];
            if (string.IsNullOrWhiteSpace(step.Name))
            {
                problems.Add($"Step {i + 1} has no name.");
            }
            else if (!seen.Add(step.Name))
            {
                problems.Add($"Step name '{step.Name}' is used more than once.");
            }

            if (step.Execute is null)
            {
                problems.Add($"Step {i + 1} ('{step.Name}') has no action.");
            }

            if (step.Timeout is { } limit && limit <= TimeSpan.Zero)
            {
                problems.Add($"Step {i + 1} ('{step.Name}') has a timeout of {limit}; a timeout is positive.");
            }
        }

        if (problems.Count > 0)
        {
            throw new InvalidSagaDefinitionException(name, problems);
        }

        return new SagaDefinition<TData>(name, [.. _steps]);
    }
}
