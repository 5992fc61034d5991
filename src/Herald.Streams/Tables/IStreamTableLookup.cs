namespace Herald.Streams;

/// <summary>
/// A table kept outside the stream (a projection's read model, a table of the application) that a stream-table join reads
/// by key, as <c>Join(lookup, ...)</c> and <c>LeftJoin(lookup, ...)</c> do. Each record reads the value at processing time.
/// </summary>
/// <typeparam name="TKey">The stream's key.</typeparam>
/// <typeparam name="TValue">The table's value.</typeparam>
public interface IStreamTableLookup<in TKey, TValue>
{
    /// <summary>The value of <paramref name="key"/>, or null when the table has none; <paramref name="services"/> are the application's.</summary>
    ValueTask<TValue?> GetAsync(TKey key, IServiceProvider services, CancellationToken cancellationToken = default);
}
