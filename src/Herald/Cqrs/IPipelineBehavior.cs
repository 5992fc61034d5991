namespace Herald.Cqrs;

/// <summary>The next step of a command or query pipeline.</summary>
/// <typeparam name="TResult">The result type (<see cref="Unit"/> for commands without one).</typeparam>
public delegate ValueTask<TResult> RequestHandlerDelegate<TResult>();

/// <summary>
/// A step around every command or query handler (validation, logging, transactions). Register it open generic
/// (<c>h.AddPipelineBehavior(typeof(MyBehavior&lt;,&gt;))</c>) or closed for one request type; it runs in registration order.
/// </summary>
/// <typeparam name="TRequest">The command or query.</typeparam>
/// <typeparam name="TResult">Its result (<see cref="Unit"/> for commands without one).</typeparam>
public interface IPipelineBehavior<in TRequest, TResult>
    where TRequest : notnull
{
    /// <summary>Runs the step; call <paramref name="next"/> to continue.</summary>
    ValueTask<TResult> HandleAsync(TRequest request, RequestHandlerDelegate<TResult> next, CancellationToken cancellationToken);
}
