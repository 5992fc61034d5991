namespace Herald.Cqrs;

/// <summary>Marks a command that returns nothing, dispatched through the <see cref="ICommandBus"/>.</summary>
public interface ICommand;

/// <summary>Marks a command that returns a result of type <typeparamref name="TResult"/> through the <see cref="ICommandBus"/>.</summary>
/// <typeparam name="TResult">What the command's handler returns.</typeparam>
#pragma warning disable CA1040 // A marker interface carries the result type for type inference at the call site.
public interface ICommand<out TResult>;

/// <summary>Marks a query that returns <typeparamref name="TResult"/> through the <see cref="IQueryBus"/>.</summary>
/// <typeparam name="TResult">What the query's handler returns.</typeparam>
public interface IQuery<out TResult>;
#pragma warning restore CA1040
