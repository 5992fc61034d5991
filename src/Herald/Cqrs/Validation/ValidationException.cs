namespace Herald.Cqrs.Validation;

/// <summary>Thrown when a request fails validation; lists every error. Never retried.</summary>
public sealed class ValidationException : HeraldException
{
    // The unit of work a joined command was refused in before its behaviours or handler ran: it enlisted nothing there.
    private Persistence.IUnitOfWorkScope? _refusedIn;

    /// <summary>Creates the exception for the request type with its errors.</summary>
    public ValidationException(Type requestType, IReadOnlyList<ValidationError> errors)
        : base($"'{requestType.Name}' is not valid: " + string.Join("; ", errors.Select(e => string.IsNullOrEmpty(e.Property) ? e.Message : $"{e.Property}: {e.Message}")))
    {
        RequestType = requestType;
        Errors = errors;
    }

    /// <summary>The request type.</summary>
    public Type RequestType { get; }

    /// <summary>Every validation error.</summary>
    public IReadOnlyList<ValidationError> Errors { get; }

    internal Persistence.IUnitOfWorkScope? RefusedIn
    {
        get => Volatile.Read(ref _refusedIn);
        init => _refusedIn = value;
    }

    /// <summary>
    /// True once, for the joined command refused in <paramref name="scope"/>: its failure need not doom that unit of work. A
    /// command that lets the refusal through after writes of its own finds it taken, and dooms it.
    /// </summary>
    internal bool TakeRefusal(Persistence.IUnitOfWorkScope scope) => ReferenceEquals(Interlocked.CompareExchange(ref _refusedIn, null, scope), scope);
}
