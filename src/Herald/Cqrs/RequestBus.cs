using System.Collections.Concurrent;
using Microsoft.Extensions.DependencyInjection;

namespace Herald.Cqrs;

/// <summary>Both in-process buses: each request runs in a DI scope of its own (its unit of work).</summary>
internal sealed class RequestBus(IServiceScopeFactory scopes) : ICommandBus, IQueryBus
{
    private static readonly ConcurrentDictionary<Type, object> Invokers = new();

    public async ValueTask SendAsync(ICommand command, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(command);
        var invoker = (RequestInvoker<Unit>)Invokers.GetOrAdd(command.GetType(), static t =>
            Activator.CreateInstance(typeof(CommandInvoker<>).MakeGenericType(t))!);
        await RunAsync(invoker, command, cancellationToken).ConfigureAwait(false);
    }

    public ValueTask<TResult> SendAsync<TResult>(ICommand<TResult> command, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(command);
        var invoker = (RequestInvoker<TResult>)Invokers.GetOrAdd(command.GetType(), static t =>
            Activator.CreateInstance(typeof(CommandInvoker<,>).MakeGenericType(t, ResultOf(t, typeof(ICommand<>))))!);
        return RunAsync(invoker, command, cancellationToken);
    }

    public ValueTask<TResult> QueryAsync<TResult>(IQuery<TResult> query, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(query);
        var invoker = (RequestInvoker<TResult>)Invokers.GetOrAdd(query.GetType(), static t =>
            Activator.CreateInstance(typeof(QueryInvoker<,>).MakeGenericType(t, ResultOf(t, typeof(IQuery<>))))!);
        return RunAsync(invoker, query, cancellationToken);
    }

    private static Type ResultOf(Type requestType, Type openInterface)
    {
        var matches = requestType.GetInterfaces()
            .Where(i => i.IsGenericType && i.GetGenericTypeDefinition() == openInterface)
            .Select(i => i.GetGenericArguments()[0])
            .Distinct()
            .ToList();
        return matches.Count == 1
            ? matches[0]
            : throw new HeraldException($"'{requestType.FullName}' implements {openInterface.Name} for {matches.Count} result types; a request has exactly one result type.");
    }

    private async ValueTask<TResult> RunAsync<TResult>(RequestInvoker<TResult> invoker, object request, CancellationToken cancellationToken)
    {
        var scope = scopes.CreateAsyncScope();
        await using (scope.ConfigureAwait(false))
        {
            return await invoker.InvokeAsync(request, scope.ServiceProvider, cancellationToken).ConfigureAwait(false);
        }
    }
}
