namespace Herald.Cqrs.Validation;

/// <summary>Runs every <see cref="IValidator{T}"/> of the request and throws one <see cref="ValidationException"/> listing all errors.</summary>
/// <typeparam name="TRequest">The request type.</typeparam>
/// <typeparam name="TResult">Its result.</typeparam>
internal sealed class ValidationBehavior<TRequest, TResult>(IEnumerable<IValidator<TRequest>> validators) : IPipelineBehavior<TRequest, TResult>
    where TRequest : notnull
{
    public ValueTask<TResult> HandleAsync(TRequest request, RequestHandlerDelegate<TResult> next, CancellationToken cancellationToken)
    {
        Validate(request, refusedIn: null);
        return next();
    }

    /// <summary>
    /// Throws the <see cref="ValidationException"/> of <paramref name="request"/>, if any; <paramref name="refusedIn"/> is the
    /// unit of work a command was refused in before anything of it ran (see <see cref="ValidationException.TakeRefusal"/>).
    /// </summary>
    internal void Validate(TRequest request, Persistence.IUnitOfWorkScope? refusedIn)
    {
        List<ValidationError>? errors = null;
        foreach (var validator in validators)
        {
            foreach (var error in validator.Validate(request))
            {
                (errors ??= []).Add(error);
            }
        }

        if (errors is not null)
        {
            throw new ValidationException(typeof(TRequest), errors) { RefusedIn = refusedIn };
        }
    }
}
