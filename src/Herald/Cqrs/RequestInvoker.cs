using Herald.Cqrs.Validation;
using Herald.Persistence;
using Microsoft.Extensions.DependencyInjection;

namespace Herald.Cqrs;

/// <summary>Resolves the one handler and the behaviours of a request type and runs them; one instance per request type.</summary>
internal abstract class RequestInvoker<TResult>
{
    public abstract ValueTask<TResult> InvokeAsync(object request, IServiceProvider services, CancellationToken cancellationToken);

    protected static THandler Single<THandler>(IServiceProvider services, Type requestType)
        where THandler : class
    {
        THandler? found = null;
        foreach (var handler in services.GetServices<THandler>())
        {
            if (found is not null)
            {
                throw new DuplicateHandlerException(requestType, found.GetType(), handler.GetType());
            }

            found = handler;
        }

        return found ?? throw new HandlerNotFoundException(requestType, typeof(THandler));
    }

    /// <summary>True for a command: what its handler writes is enlisted in the unit of work it runs in (a query writes nothing).</summary>
    protected virtual bool Writes => true;

    protected ValueTask<TResult> Pipeline<TRequest>(TRequest request, IServiceProvider services, RequestHandlerDelegate<TResult> handler, CancellationToken cancellationToken)
        where TRequest : notnull
    {
        var behaviors = services.GetServices<IPipelineBehavior<TRequest, TResult>>() as IPipelineBehavior<TRequest, TResult>[]
            ?? [.. services.GetServices<IPipelineBehavior<TRequest, TResult>>()];
        var first = 0;
        if (behaviors.Length > 0 && behaviors[0] is ValidationBehavior<TRequest, TResult> validation)
        {
            // Validation first, as registered: a command it refuses ran nothing that could have written, so the unit of
            // work it joined is not doomed by the refusal (UnitOfWorkRunner).
            validation.Validate(request, Writes ? UnitOfWorkRunner.Current : null);
            first = 1;
        }

        var next = handler;
        for (var i = behaviors.Length - 1; i >= first; i--)
        {
            var behavior = behaviors[i];
            var following = next;
            next = () => behavior.HandleAsync(request, following, cancellationToken);
        }

        return next();
    }
}

/// <summary>Runs a request of type <typeparamref name="TRequest"/> through its one <typeparamref name="THandler"/> and the behaviours.</summary>
internal abstract class RequestInvoker<TRequest, THandler, TResult> : RequestInvoker<TResult>
    where TRequest : notnull
    where THandler : class
{
    public sealed override ValueTask<TResult> InvokeAsync(object request, IServiceProvider services, CancellationToken cancellationToken)
    {
        var typed = (TRequest)request;
        var handler = Single<THandler>(services, typeof(TRequest));
        return Pipeline(typed, services, () => HandleAsync(handler, typed, cancellationToken), cancellationToken);
    }

    /// <summary>Calls the handler's own method.</summary>
    protected abstract ValueTask<TResult> HandleAsync(THandler handler, TRequest request, CancellationToken cancellationToken);
}

internal sealed class CommandInvoker<TCommand> : RequestInvoker<TCommand, ICommandHandler<TCommand>, Unit>
    where TCommand : ICommand
{
    protected override async ValueTask<Unit> HandleAsync(ICommandHandler<TCommand> handler, TCommand request, CancellationToken cancellationToken)
    {
        await handler.HandleAsync(request, cancellationToken).ConfigureAwait(false);
        return Unit.Value;
    }
}

internal sealed class CommandInvoker<TCommand, TResult> : RequestInvoker<TCommand, ICommandHandler<TCommand, TResult>, TResult>
    where TCommand : ICommand<TResult>
{
    protected override ValueTask<TResult> HandleAsync(ICommandHandler<TCommand, TResult> handler, TCommand request, CancellationToken cancellationToken) =>
        handler.HandleAsync(request, cancellationToken);
}

internal sealed class QueryInvoker<TQuery, TResult> : RequestInvoker<TQuery, IQueryHandler<TQuery, TResult>, TResult>
    where TQuery : IQuery<TResult>
{
    protected override bool Writes => false;

    protected override ValueTask<TResult> HandleAsync(IQueryHandler<TQuery, TResult> handler, TQuery request, CancellationToken cancellationToken) =>
        handler.HandleAsync(request, cancellationToken);
}
