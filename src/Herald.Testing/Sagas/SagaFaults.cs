namespace Herald.Testing.Sagas;

/// <summary>
/// Failures to inject into an orchestrated saga run: a chosen step (or its compensation) throws instead of running, so a
/// test drives the compensation path without changing the saga's code.
/// </summary>
public sealed class SagaFaults
{
    private readonly HashSet<string> _steps;
    private readonly Dictionary<(string Step, bool Compensation), Fault> _faults = [];

    internal SagaFaults(IEnumerable<string> steps)
    {
        _steps = new HashSet<string>(steps, StringComparer.Ordinal);
    }

    /// <summary>
    /// Makes step <paramref name="step"/> throw <paramref name="exception"/> (an <see cref="InvalidOperationException"/> when
    /// null) on its first <paramref name="times"/> runs, without running its code; every run when <paramref name="times"/> is null.
    /// </summary>
    /// <exception cref="ArgumentException">The saga has no such step.</exception>
    public SagaFaults FailStep(string step, Exception? exception = null, int? times = null) => Add(step, compensation: false, exception, times);

    /// <summary>Makes the compensation of <paramref name="step"/> throw, as <see cref="FailStep"/> does for the step itself.</summary>
    /// <exception cref="ArgumentException">The saga has no such step.</exception>
    public SagaFaults FailCompensation(string step, Exception? exception = null, int? times = null) => Add(step, compensation: true, exception, times);

    /// <summary>The failure to throw for this run of the step or compensation, or null to run it.</summary>
    internal Exception? Next(string step, bool compensation)
    {
        lock (_faults)
        {
            if (!_faults.TryGetValue((step, compensation), out var fault) || fault.Remaining == 0)
            {
                return null;
            }

            if (fault.Remaining > 0)
            {
                fault.Remaining--;
            }

            return fault.Exception ?? new InvalidOperationException($"Injected failure of {(compensation ? "the compensation of " : string.Empty)}step '{step}'.");
        }
    }

    private SagaFaults Add(string step, bool compensation, Exception? exception, int? times)
    {
        ArgumentNullException.ThrowIfNull(step);
        if (!_steps.Contains(step))
        {
            throw new ArgumentException($"The saga has no step '{step}'; its steps are {string.Join(", ", _steps)}.", nameof(step));
        }

        if (times is < 1)
        {
            throw new ArgumentOutOfRangeException(nameof(times), times, "A fault fails at least one run.");
        }

        lock (_faults)
        {
            _faults[(step, compensation)] = new Fault(exception, times ?? -1);
        }

        return this;
    }

    private sealed class Fault(Exception? exception, int remaining)
    {
        public Exception? Exception { get; } = exception;

        // -1: every run.
        public int Remaining { get; set; } = remaining;
    }
}
