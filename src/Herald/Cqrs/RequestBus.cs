using System.Collections.Concurrent;
using Herald.EventSourcing.Aggregates;
using Herald.Persistence;

namespace Herald.Cqrs;

/// <summary>Both in-process buses: each request runs through the unit-of-work runner (its own scope, or the running one).</summary>
internal sealed class RequestBus(UnitOfWorkRunner runner) : ICommandBus, IQueryBus
{
    private static readonly ConcurrentDictionary<Type, object> Invokers = new();

    // Without metadata of its own a command takes the runner's: that of the work it was sent from, even once that work's
    // unit of work has ended (as a message sent through IMessageBus from there does).
    public ValueTask SendAsync(ICommand command, CancellationToken cancellationToken = default) =>
        SendCommandAsync(command, null, cancellationToken);

    public ValueTask SendAsync(ICommand command, EventMetadata metadata, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(metadata);
        return SendCommandAsync(command, metadata, cancellationToken);
    }

    public ValueTask<TResult> SendAsync<TResult>(ICommand<TResult> command, CancellationToken cancellationToken = default) =>
        SendCommandAsync(command, null, cancellationToken);

    public ValueTask<TResult> SendAsync<TResult>(ICommand<TResult> command, EventMetadata metadata, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(metadata);
        return SendCommandAsync(command, metadata, cancellationToken);
    }

    public ValueTask<TResult> QueryAsync<TResult>(IQuery<TResult> query, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(query);
        var invoker = (RequestInvoker<TResult>)Invokers.GetOrAdd(query.GetType(), static t =>
            Activator.CreateInstance(typeof(QueryInvoker<,>).MakeGenericType(OfOneKind(t), ResultOf(t, typeof(IQuery<>))))!);
        return runner.RunReadingAsync((services, token) => invoker.InvokeAsync(query, services, token), cancellationToken);
    }

    /// <summary>
    /// Refuses a request type that is more than one kind of request (a command and a command with a result, or a command and
    /// a query): its invokers are cached by its type, and one handler runs it (AddHandler refuses it the same way).
    /// </summary>
    internal static Type OfOneKind(Type requestType)
    {
        var kinds = requestType.GetInterfaces()
            .Where(i => i == typeof(ICommand) || (i.IsGenericType && (i.GetGenericTypeDefinition() == typeof(ICommand<>) || i.GetGenericTypeDefinition() == typeof(IQuery<>))))
            .ToList();
        return kinds.Count <= 1
            ? requestType
            : throw new HeraldException(
                $"'{requestType.FullName}' is {string.Join(" and ", kinds.Select(HandlerNotFoundException.Describe))} at once; a request is one command or one query, with one result type, run by one handler. Make a type per kind.");
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

    private async ValueTask SendCommandAsync(ICommand command, EventMetadata? metadata, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(command);
        var invoker = (RequestInvoker<Unit>)Invokers.GetOrAdd(command.GetType(), static t =>
            Activator.CreateInstance(typeof(CommandInvoker<>).MakeGenericType(OfOneKind(t)))!);
        await RunAsync(invoker, command, metadata, cancellationToken).ConfigureAwait(false);
    }

    private ValueTask<TResult> SendCommandAsync<TResult>(ICommand<TResult> command, EventMetadata? metadata, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(command);
        var invoker = (RequestInvoker<TResult>)Invokers.GetOrAdd(command.GetType(), static t =>
            Activator.CreateInstance(typeof(CommandInvoker<,>).MakeGenericType(OfOneKind(t), ResultOf(t, typeof(ICommand<>))))!);
        return RunAsync(invoker, command, metadata, cancellationToken);
    }

    private ValueTask<TResult> RunAsync<TResult>(RequestInvoker<TResult> invoker, object request, EventMetadata? metadata, CancellationToken cancellationToken) =>
        runner.RunAsync((services, token) => invoker.InvokeAsync(request, services, token), metadata, cancellationToken);
}
