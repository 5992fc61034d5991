namespace Herald.Cqrs.Validation;

/// <summary>Checks a command or query before its handler runs; every error found is reported at once.</summary>
/// <typeparam name="T">The request type.</typeparam>
public interface IValidator<in T>
{
    /// <summary>Returns every problem with the request (none when it is valid).</summary>
    IEnumerable<ValidationError> Validate(T instance);
}
