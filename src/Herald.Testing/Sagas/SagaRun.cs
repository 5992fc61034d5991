using Herald.Sagas;
using Herald.Testing.Observing;

namespace Herald.Testing.Sagas;

/// <summary>One run of a step or of its compensation in an observed orchestrated saga, and how it ended.</summary>
public sealed class SagaStepRun
{
    internal SagaStepRun(string step, bool isCompensation, int attempt, Exception? failure)
    {
        Step = step;
        IsCompensation = isCompensation;
        Attempt = attempt;
        Failure = failure;
    }

    /// <summary>The step's name.</summary>
    public string Step { get; }

    /// <summary>True for a run of the step's compensation.</summary>
    public bool IsCompensation { get; }

    /// <summary>Which run of the step this was (retries count), from 1.</summary>
    public int Attempt { get; }

    /// <summary>What it threw (an injected fault included); null when it succeeded.</summary>
    public Exception? Failure { get; }

    /// <summary>True when the run finished without throwing.</summary>
    public bool Succeeded => Failure is null;

    /// <summary>The run as failure messages show it: <c>compensate charge-payment#2 failed (declined)</c>.</summary>
    public override string ToString() => $"{(IsCompensation ? "compensate " : string.Empty)}{Step}#{Attempt} {(Succeeded ? "ok" : $"failed ({Failure!.Message})")}";
}

/// <summary>An orchestrated saga run to its end by the harness: the instance as it ended, every step run, and what the saga sent.</summary>
/// <typeparam name="TData">The saga's data.</typeparam>
public sealed class SagaRun<TData>
    where TData : class
{
    internal SagaRun(SagaInstance instance, IReadOnlyList<SagaStepRun> steps, IReadOnlyList<SentMessage> sent, IReadOnlyList<SentMessage> published)
    {
        Instance = instance;
        Data = SagaData.Deserialize<TData>(instance.Data);
        Steps = steps;
        Sent = sent;
        Published = published;
    }

    /// <summary>The instance as the run left it (status, completed steps, error).</summary>
    public SagaInstance Instance { get; }

    /// <summary>The saga's data as the run left it.</summary>
    public TData Data { get; }

    /// <summary>Where the instance ended: completed, compensated, or parked as failed.</summary>
    public SagaStatus Status => Instance.Status;

    /// <summary>Every run of a step or compensation, in the order they ran.</summary>
    public IReadOnlyList<SagaStepRun> Steps { get; }

    /// <summary>The steps that executed successfully, in order.</summary>
    public IReadOnlyList<string> Executed => [.. Steps.Where(s => s.Succeeded && !s.IsCompensation).Select(s => s.Step)];

    /// <summary>The steps whose compensation ran successfully, in the order they were compensated.</summary>
    public IReadOnlyList<string> Compensated => [.. Steps.Where(s => s.Succeeded && s.IsCompensation).Select(s => s.Step)];

    /// <summary>The messages the saga's steps and compensations sent to queues (their cause is the step's idempotency key).</summary>
    public IReadOnlyList<SentMessage> Sent { get; }

    /// <summary>The messages the saga's steps and compensations published.</summary>
    public IReadOnlyList<SentMessage> Published { get; }

    /// <summary>Checks that the saga ended with <paramref name="status"/>.</summary>
    /// <exception cref="HarnessAssertionException">It ended otherwise; the message lists the step runs.</exception>
    public SagaRun<TData> ExpectStatus(SagaStatus status) =>
        Status == status
            ? this
            : throw new HarnessAssertionException($"Expected saga '{Instance.SagaType}' instance '{Instance.Id}' to end {status}, but it ended {Status}{(Instance.Error is null ? string.Empty : $" ({Instance.Error})")}. Runs: {Describe()}.");

    /// <summary>Checks that exactly these steps executed, in this order, and these were compensated, in this order.</summary>
    /// <exception cref="HarnessAssertionException">Other steps ran; the message lists the step runs.</exception>
    public SagaRun<TData> ExpectSteps(IEnumerable<string> executed, IEnumerable<string>? compensated = null)
    {
        ArgumentNullException.ThrowIfNull(executed);
        var expectedExecuted = executed.ToList();
        var expectedCompensated = compensated?.ToList() ?? [];
        if (!Executed.SequenceEqual(expectedExecuted, StringComparer.Ordinal) || !Compensated.SequenceEqual(expectedCompensated, StringComparer.Ordinal))
        {
            throw new HarnessAssertionException(
                $"Expected steps [{string.Join(", ", expectedExecuted)}] compensated [{string.Join(", ", expectedCompensated)}], " +
                $"but executed [{string.Join(", ", Executed)}] compensated [{string.Join(", ", Compensated)}]. Runs: {Describe()}.");
        }

        return this;
    }

    /// <summary>Checks that the saga sent exactly one <typeparamref name="TMessage"/> matching <paramref name="where"/>; returns it.</summary>
    /// <exception cref="HarnessAssertionException">None or more than one was sent.</exception>
    public TMessage ExpectSent<TMessage>(Func<TMessage, bool>? where = null) => SagaScenarioResult<TData>.Single(Sent, "sent", where);

    private string Describe() => Describe(Steps);

    internal static string Describe(IReadOnlyList<SagaStepRun> steps) => steps.Count == 0 ? "none" : string.Join(", ", steps);
}
