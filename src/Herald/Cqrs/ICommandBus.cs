namespace Herald.Cqrs;

/// <summary>Dispatches commands in process to their one handler, through the pipeline behaviours, in a DI scope of their own.</summary>
public interface ICommandBus
{
    /// <summary>Dispatches a command that returns nothing.</summary>
    ValueTask SendAsync(ICommand command, CancellationToken cancellationToken = default);

    /// <summary>Dispatches a command and returns its handler's result.</summary>
    ValueTask<TResult> SendAsync<TResult>(ICommand<TResult> command, CancellationToken cancellationToken = default);
}

/// <summary>Dispatches queries in process to their one handler, through the pipeline behaviours.</summary>
public interface IQueryBus
{
    /// <summary>Answers a query.</summary>
    ValueTask<TResult> QueryAsync<TResult>(IQuery<TResult> query, CancellationToken cancellationToken = default);
}
