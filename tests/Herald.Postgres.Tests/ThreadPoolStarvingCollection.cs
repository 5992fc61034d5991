namespace Herald.Postgres.Tests;

/// <summary>
/// Tests that starve the thread pool on purpose (to prove renewals do not depend on it) run alone: in parallel with other
/// classes they would stall those classes' tests past their deadlines.
/// </summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class ThreadPoolStarvingCollection
{
    public const string Name = "Starves the thread pool";
}
