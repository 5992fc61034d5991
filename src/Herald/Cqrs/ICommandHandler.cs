namespace Herald.Cqrs;

/// <summary>Handles a command that returns nothing. Exactly one handler may exist per command type.</summary>
/// <typeparam name="TCommand">The command type.</typeparam>
public interface ICommandHandler<in TCommand>
    where TCommand : ICommand
{
    /// <summary>Handles the command.</summary>
    ValueTask HandleAsync(TCommand command, CancellationToken cancellationToken);
}

/// <summary>Handles a command that returns a result. Exactly one handler may exist per command type.</summary>
/// <typeparam name="TCommand">The command type.</typeparam>
/// <typeparam name="TResult">Its result.</typeparam>
public interface ICommandHandler<in TCommand, TResult>
    where TCommand : ICommand<TResult>
{
    /// <summary>Handles the command and returns its result.</summary>
    ValueTask<TResult> HandleAsync(TCommand command, CancellationToken cancellationToken);
}

/// <summary>Answers a query. Exactly one handler may exist per query type.</summary>
/// <typeparam name="TQuery">The query type.</typeparam>
/// <typeparam name="TResult">Its result.</typeparam>
public interface IQueryHandler<in TQuery, TResult>
    where TQuery : IQuery<TResult>
{
    /// <summary>Answers the query.</summary>
    ValueTask<TResult> HandleAsync(TQuery query, CancellationToken cancellationToken);
}
