using Herald.Projections;
using Microsoft.Extensions.DependencyInjection;

namespace Herald.Streams;

/// <summary>The tables Herald brings for stream-table joins: a projection's read-model table.</summary>
public static class StreamTables
{
    /// <summary>
    /// The documents of a read-model table (what a projection keeps, on whichever store the application uses), looked up by
    /// the id <paramref name="id"/> makes of the key (the key's text by default).
    /// </summary>
    public static IStreamTableLookup<TKey, TValue> ReadModel<TKey, TValue>(ReadModelTable<TValue> table, Func<TKey, string>? id = null)
        where TValue : class
    {
        ArgumentNullException.ThrowIfNull(table);
        return new ReadModelLookup<TKey, TValue>(table, id ?? (key => key?.ToString() ?? throw new ArgumentNullException(nameof(key))));
    }

    private sealed class ReadModelLookup<TKey, TValue>(ReadModelTable<TValue> table, Func<TKey, string> id) : IStreamTableLookup<TKey, TValue>
        where TValue : class
    {
        public ValueTask<TValue?> GetAsync(TKey key, IServiceProvider services, CancellationToken cancellationToken = default) =>
            services.GetRequiredService<ReadModels>().GetAsync(table, id(key), cancellationToken);
    }
}
