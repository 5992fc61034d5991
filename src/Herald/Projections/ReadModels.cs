namespace Herald.Projections;

/// <summary>
/// Reads the projected read models (what queries and HTTP endpoints use): committed documents of each table's active
/// generation, so a rebuild in progress is never seen half done.
/// </summary>
public sealed class ReadModels
{
    private readonly IReadModelStore _store;

    /// <summary>Reads through <paramref name="store"/>.</summary>
    public ReadModels(IReadModelStore store)
    {
        ArgumentNullException.ThrowIfNull(store);
        _store = store;
    }

    /// <summary>The document <paramref name="id"/> of <paramref name="table"/>, or null.</summary>
    public async ValueTask<T?> GetAsync<T>(ReadModelTable<T> table, string id, CancellationToken cancellationToken = default)
        where T : class
    {
        ArgumentNullException.ThrowIfNull(table);
        ArgumentNullException.ThrowIfNull(id);
        return table.Deserialize(await _store.GetAsync(table.Name, id, cancellationToken).ConfigureAwait(false));
    }

    /// <summary>A page of the documents matching <paramref name="query"/>, in id order; pass its <see cref="ReadModelPage{T}.NextAfterId"/> on for the next.</summary>
    public async ValueTask<ReadModelPage<T>> QueryAsync<T>(ReadModelTable<T> table, ReadModelQuery query, CancellationToken cancellationToken = default)
        where T : class
    {
        ArgumentNullException.ThrowIfNull(table);
        ArgumentNullException.ThrowIfNull(query);
        var documents = await _store.QueryAsync(table.Name, query, cancellationToken).ConfigureAwait(false);
        var items = new T[documents.Count];
        for (var i = 0; i < items.Length; i++)
        {
            items[i] = table.Deserialize(documents[i].Json)!;
        }

        return new ReadModelPage<T>(items, documents.Count == query.Limit ? documents[^1].Id : null);
    }
}

/// <summary>One page of a read-model query.</summary>
/// <param name="Items">The documents, in id order.</param>
/// <param name="NextAfterId">The <see cref="ReadModelQuery.AfterId"/> of the next page, or null when this page is the last.</param>
/// <typeparam name="T">The document type.</typeparam>
public sealed record ReadModelPage<T>(IReadOnlyList<T> Items, string? NextAfterId);
