using Herald.Sagas;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Herald.Testing.Sagas;

/// <summary>
/// The user's saga definition with every step and compensation wrapped: each run is recorded with how it ended, and an
/// injected fault throws in place of the step's code. Names, retry policies and timeouts stay as they are.
/// </summary>
internal sealed class SagaRunObserver<TData>
    where TData : class
{
    private readonly List<SagaStepRun> _runs = [];
    private readonly SagaFaults _faults;
    private readonly ILogger _logger;

    public SagaRunObserver(SagaDefinition<TData> definition, SagaFaults faults, ILoggerFactory? loggerFactory)
    {
        _faults = faults;
        _logger = (loggerFactory ?? NullLoggerFactory.Instance).CreateLogger("Herald.Testing");
        Definition = SagaDefinition.Create<TData>(definition.Name, builder =>
        {
            foreach (var step in definition.Steps)
            {
                builder.Step(
                    step.Name,
                    Observe(step.Name, compensation: false, step.Execute),
                    step.Compensate is { } compensate ? Observe(step.Name, compensation: true, compensate) : null,
                    step.Retry,
                    step.Timeout);
            }
        });
    }

    public SagaDefinition<TData> Definition { get; }

    public IReadOnlyList<SagaStepRun> Steps
    {
        get
        {
            lock (_runs)
            {
                return [.. _runs];
            }
        }
    }

    private Func<SagaStepContext<TData>, ValueTask> Observe(string step, bool compensation, Func<SagaStepContext<TData>, ValueTask> run) =>
        async context =>
        {
            try
            {
                if (_faults.Next(step, compensation) is { } fault)
                {
                    throw fault;
                }

                await run(context).ConfigureAwait(false);
            }
            catch (Exception ex)
            {
                Record(new SagaStepRun(step, compensation, context.Attempt, ex), context);
                throw;
            }

            Record(new SagaStepRun(step, compensation, context.Attempt, null), context);
        };

    private void Record(SagaStepRun run, SagaStepContext<TData> context)
    {
        Log.SagaStepObserved(_logger, context.SagaName, context.SagaId, run.IsCompensation ? "compensation" : "execution", run.Step, run.Attempt, run.Succeeded ? "succeeded" : $"failed: {run.Failure!.Message}");
        lock (_runs)
        {
            _runs.Add(run);
        }
    }
}
