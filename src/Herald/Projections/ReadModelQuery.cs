namespace Herald.Projections;

/// <summary>
/// Which documents of a read-model table to list: those whose top-level string properties equal every value of
/// <see cref="Where"/>, after <see cref="AfterId"/>, at most <see cref="Limit"/> of them, in id order (keyset paging: pass
/// the last id of a page as the next page's <see cref="AfterId"/>).
/// </summary>
public sealed record ReadModelQuery
{
    /// <summary>The largest <see cref="Limit"/> a store accepts.</summary>
    public const int MaxLimit = 1000;

    /// <summary>
    /// Equality on top-level string properties, by their JSON names (as serialized, such as <c>customerId</c>); a document
    /// without the property, or with a non-string value there, does not match.
    /// </summary>
    public IReadOnlyDictionary<string, string> Where { get; init; } = new Dictionary<string, string>(StringComparer.Ordinal);

    /// <summary>List only documents whose id sorts after this one (ordinal); null starts at the first.</summary>
    public string? AfterId { get; init; }

    /// <summary>The page size, 1 to <see cref="MaxLimit"/>.</summary>
    public int Limit { get; init; } = 100;
}
