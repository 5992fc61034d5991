namespace Herald.Cqrs.Validation;

/// <summary>Thrown when a request fails validation; lists every error. Never retried.</summary>
public sealed class ValidationException : HeraldException
{
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
}
