namespace Herald.Sagas;

/// <summary>A saga definition cannot run; the message lists every problem found.</summary>
public sealed class InvalidSagaDefinitionException : HeraldException
{
    /// <summary>Creates the exception for the saga <paramref name="sagaName"/> with its <paramref name="problems"/>.</summary>
    public InvalidSagaDefinitionException(string? sagaName, IReadOnlyList<string> problems)
        : base($"The saga definition '{sagaName}' is invalid: {string.Join(" ", problems ?? [])}")
    {
        Problems = problems ?? [];
    }

    /// <summary>Every problem found, one sentence each.</summary>
    public IReadOnlyList<string> Problems { get; }
}
