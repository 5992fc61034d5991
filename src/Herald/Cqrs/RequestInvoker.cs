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

    protected static ValueTask<TResult> Pipeline<TRequest>(TRequest request, IServiceProvider services, RequestHandlerDelegate<TResult> handler, CancellationToken cancellationToken)
        where TRequest : notnull
    {
        var behaviors = services.GetServices<IPipelineBehavior<TRequest, TResult>>() as IPipelineBehavior<TRequest, TResult>[]
            ?? [.. services.GetServices<IPipelineBehavior<TRequest, TResult>>()];
        var next = handler;
        for (var i = behaviors.Length - 1; i >= 0; i--)
        {
            var behavior = behaviors[i];
            var following = next;
            next = () => behavior.HandleAsync(request, following, cancellationToken);
        }

        return next();
    }
}

internal sealed class CommandInvoker<TCommand> : RequestInvoker<Unit>
    where TCommand : ICommand
{
    public override ValueTask<Unit> InvokeAsync(object request, IServiceProvider services, CancellationToken cancellationToken)
    {
        var command = (TCommand)request;
        var handler = Single<ICommandHandler<TCommand>>(services, typeof(TCommand));
        return Pipeline(command, services, async () =>
        {
            await handler.HandleAsync(command, cancellationToken).ConfigureAwait(false);
            return Unit.Value;
        }, cancellationToken);
    }
}

internal sealed class CommandInvoker<TCommand, TResult> : RequestInvoker<TResult>
    where TCommand : ICommand<TResult>
{
    public override ValueTask<TResult> InvokeAsync(object request, IServiceProvider services, CancellationToken cancellationToken)
    {
        var command = (TCommand)request;
        var handler = Single<ICommandHandler<TCommand, TResult>>(services, typeof(TCommand));
        return Pipeline(command, services, () => handler.HandleAsync(command, cancellationToken), cancellationToken);
    }
}

internal sealed class QueryInvoker<TQuery, TResult> : RequestInvoker<TResult>
    where TQuery : IQuery<TResult>
{
    public override ValueTask<TResult> InvokeAsync(object request, IServiceProvider services, CancellationToken cancellationToken)
    {
        var query = (TQuery)request;
        var handler = Single<IQueryHandler<TQuery, TResult>>(services, typeof(TQuery));
        return Pipeline(query, services, () => handler.HandleAsync(query, cancellationToken), cancellationToken);
    }
}
