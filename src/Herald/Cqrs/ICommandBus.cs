using Herald.EventSourcing.Aggregates;

namespace Herald.Cqrs;

/// <summary>
/// Dispatches commands in process to their one handler, through the pipeline behaviours, in a unit of work: the handler's
/// writes commit when it returns, or not at all. A command sent while another unit of work runs (from a message handler)
/// joins it instead.
/// </summary>
public interface ICommandBus
{
    /// <summary>Dispatches a command that returns nothing.</summary>
    ValueTask SendAsync(ICommand command, CancellationToken cancellationToken = default);

    /// <summary>Dispatches a command and returns its handler's result.</summary>
    ValueTask<TResult> SendAsync<TResult>(ICommand<TResult> command, CancellationToken cancellationToken = default);

    /// <summary>
    /// Dispatches a command with the metadata of what caused it (correlation id, causation id, user id), which the events its
    /// handler stores through an aggregate repository carry.
    /// </summary>
    ValueTask SendAsync(ICommand command, EventMetadata metadata, CancellationToken cancellationToken = default);

    /// <summary>Dispatches a command with its metadata (see the overload without a result) and returns its handler's result.</summary>
    ValueTask<TResult> SendAsync<TResult>(ICommand<TResult> command, EventMetadata metadata, CancellationToken cancellationToken = default);
}

/// <summary>Dispatches queries in process to their one handler, through the pipeline behaviours.</summary>
public interface IQueryBus
{
    /// <summary>Answers a query.</summary>
    ValueTask<TResult> QueryAsync<TResult>(IQuery<TResult> query, CancellationToken cancellationToken = default);
}
