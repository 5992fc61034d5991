namespace Herald.Cqrs.Validation;

/// <summary>Runs every <see cref="IValidator{T}"/> of the request and throws one <see cref="ValidationException"/> listing all errors.</summary>
/// <typeparam name="TRequest">The request type.</typeparam>
/// <typeparam name="TResult">Its result.</typeparam>
internal sealed class ValidationBehavior<TRequest, TResult>(IEnumerable<IValidator<TRequest>> validators) : IPipelineBehavior<TRequest, TResult>
    where TRequest : notnull
{
    public ValueTask<TResult> HandleAsync(TRequest request, RequestHandlerDelegate<TResult> next, CancellationToken cancellationToken)
    {
        List<ValidationError>? errors = null;
        foreach (var validator in validators)
        {
            foreach (var error in validator.Validate(request))
            {
                (errors ??= []).Add(error);
            }
        }

        return errors is null ? next() : throw new ValidationException(typeof(TRequest), errors);
    }
}
