namespace Herald.Sagas;

/// <summary>How the host runs orchestrated saga instances started in a unit of work, and finds and resumes those that no runner is driving (a crash, a stop).</summary>
public sealed class SagaOptions
{
    /// <summary>How often the node that leads the resume sweep looks for unfinished instances. Default 30 seconds.</summary>
    public TimeSpan ResumeInterval { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>
    /// With a store several processes may share (SQLite, PostgreSQL), how long an unfinished instance must go without a save
    /// before a sweep takes it over; a runner renews its instance every third of it while a step runs, so a live runner is not
    /// raced however long the step takes. Default 2 minutes.
    /// The in-memory stores, which serve one process, resume every instance this process does not run, at once. Without an
    /// outbox, it is also how long past its due time a state machine's timeout may still be held before the sweep sends it again.
    /// </summary>
    public TimeSpan StaleAfter { get; set; } = TimeSpan.FromMinutes(2);

    /// <summary>How many instances one sweep resumes side by side. Default 4.</summary>
    public int ResumeConcurrency { get; set; } = 4;

    /// <summary>How many instances started in a unit of work (<see cref="SagaOrchestrator.StartInAsync{TData}"/>) run side by side. Default 16.</summary>
    public int RunConcurrency { get; set; } = 16;

    internal static void Check(SagaOptions options, Herald.Internal.OptionsProblems problems)
    {
        problems.Positive(nameof(ResumeInterval), options.ResumeInterval);
        problems.Positive(nameof(StaleAfter), options.StaleAfter);
        problems.Between(nameof(ResumeConcurrency), options.ResumeConcurrency, 1, 256);
        problems.Between(nameof(RunConcurrency), options.RunConcurrency, 1, 256);
        problems.AddMessages(Hosting.OptionLimits.Waits(nameof(SagaOptions), (nameof(ResumeInterval), options.ResumeInterval)));
        problems.AddMessages(Hosting.OptionLimits.Spans(nameof(SagaOptions), (nameof(StaleAfter), options.StaleAfter)));
    }
}
