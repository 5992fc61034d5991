using System.Text.Json;
using System.Text.RegularExpressions;

namespace Herald.Projections;

/// <summary>
/// A projection: handlers of stored events that keep one or more read models. Derive from it, declare the tables it keeps
/// with <see cref="Table{T}(ReadModelTable{T})"/> and its handlers with <see cref="On{TEvent}"/> in the constructor, and register it with
/// <c>AddProjection</c>. It is a singleton: keep no per-event state in fields.
/// </summary>
/// <example>
/// <code>
/// sealed class OrderSummaries : Projection
/// {
///     public static readonly ReadModelTable&lt;OrderSummary&gt; Orders = new("order_summaries");
///
///     public OrderSummaries() : base("order-summaries")
///     {
///         Table(Orders);
///         On&lt;OrderPlaced&gt;((e, context, _) =&gt; context.UpsertAsync(Orders, e.OrderId, new OrderSummary(e.OrderId, "Placed")));
///         On&lt;OrderShipped&gt;((e, context, _) =&gt; context.UpdateAsync(Orders, e.OrderId, o =&gt; o with { Status = "Shipped" }));
///     }
/// }
/// </code>
/// </example>
public abstract partial class Projection
{
    private readonly Dictionary<Type, Func<object, ProjectionContext, CancellationToken, ValueTask>> _handlers = [];
    private readonly List<string> _tables = [];

    /// <summary>Creates a projection named <paramref name="name"/> (its checkpoint and leader-election name).</summary>
    /// <exception cref="ArgumentException">The name is not 1 to 100 letters, digits, '-', '_' or '.'.</exception>
    protected Projection(string name)
    {
        if (name is not { Length: > 0 and <= 100 } || !NamePattern().IsMatch(name))
        {
            throw new ArgumentException($"'{name}' is not a projection name: use 1 to 100 letters, digits, '-', '_' or '.'.", nameof(name));
        }

        Name = name;
    }

    /// <summary>The projection's name.</summary>
    public string Name { get; }

    /// <summary>The event types it handles; the subscription of an async projection reads only these.</summary>
    public IReadOnlyCollection<Type> EventTypes => _handlers.Keys;

    /// <summary>
    /// True to move a stored event that no longer reads (an <see cref="EventSourcing.UnreadableEventException"/>) to the host's
    /// dead letters, under the projection's name, and go on past it; false (the default) stops the projection on it. Set it in
    /// the constructor.
    /// </summary>
    public bool DeadLetterUnreadableEvents { get; protected init; }

    /// <summary>The read-model tables it keeps: a rebuild fills new generations of all of them and swaps them in at once.</summary>
    public IReadOnlyList<string> Tables => _tables;

    /// <summary>Declares a table this projection keeps and returns it.</summary>
    protected ReadModelTable<T> Table<T>(string name, JsonSerializerOptions? jsonOptions = null)
        where T : class => Table(new ReadModelTable<T>(name, jsonOptions));

    /// <summary>Declares a table this projection keeps (a handle shared with the queries that read it) and returns it.</summary>
    /// <exception cref="ArgumentException">The table is declared already.</exception>
    protected ReadModelTable<T> Table<T>(ReadModelTable<T> table)
        where T : class
    {
        ArgumentNullException.ThrowIfNull(table);
        if (_tables.Contains(table.Name, StringComparer.Ordinal))
        {
            throw new ArgumentException($"Projection '{Name}' declares the table '{table.Name}' twice.", nameof(table));
        }

        _tables.Add(table.Name);
        return table;
    }

    /// <summary>Handles events of type <typeparamref name="TEvent"/> (registered with the host's message types).</summary>
    /// <exception cref="ArgumentException">A handler for this type is registered already.</exception>
    protected void On<TEvent>(Func<TEvent, ProjectionContext, CancellationToken, ValueTask> apply)
        where TEvent : notnull
    {
        ArgumentNullException.ThrowIfNull(apply);
        if (!_handlers.TryAdd(typeof(TEvent), (e, context, token) => apply((TEvent)e, context, token)))
        {
            throw new ArgumentException($"Projection '{Name}' handles {typeof(TEvent).Name} twice.", nameof(apply));
        }
    }

    /// <summary>True when <paramref name="table"/> is one this projection declared.</summary>
    internal bool Keeps(string table) => _tables.Contains(table, StringComparer.Ordinal);

    /// <summary>Applies one event; false when this projection has no handler for its type.</summary>
    internal async ValueTask<bool> ApplyAsync(object @event, ProjectionContext context, CancellationToken cancellationToken)
    {
        if (!_handlers.TryGetValue(@event.GetType(), out var apply))
        {
            return false;
        }

        await apply(@event, context, cancellationToken).ConfigureAwait(false);
        return true;
    }

    [GeneratedRegex("^[A-Za-z0-9._-]+$", RegexOptions.CultureInvariant)]
    private static partial Regex NamePattern();
}
