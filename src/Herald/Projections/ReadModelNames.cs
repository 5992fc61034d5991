using System.Text.RegularExpressions;
using Herald.EventSourcing;

namespace Herald.Projections;

/// <summary>The rules for read-model table names and query property names, shared by every store.</summary>
public static partial class ReadModelNames
{
    /// <summary>The longest table name: with a store's prefix and generation suffix it stays within SQL identifier limits.</summary>
    public const int MaxTableNameLength = 40;

    /// <summary>True for a table name of lower-case letters, digits and underscores, starting with a letter, of at most <see cref="MaxTableNameLength"/> characters.</summary>
    public static bool IsValid(string? table) => table is { Length: > 0 and <= MaxTableNameLength } && TableName().IsMatch(table);

    /// <summary>Throws <see cref="ArgumentException"/> unless <see cref="IsValid"/>.</summary>
    public static void Validate(string table)
    {
        if (!IsValid(table))
        {
            throw new ArgumentException(
                $"'{table}' is not a read-model table name: use 1 to {MaxTableNameLength} lower-case letters, digits and underscores, starting with a letter.",
                nameof(table));
        }
    }

    /// <summary>Validates a query: its limit, its property names (letters, digits, underscores, starting with a letter) and that its <see cref="ReadModelQuery.AfterId"/> holds no half of a surrogate pair.</summary>
    public static void Validate(ReadModelQuery query)
    {
        ArgumentNullException.ThrowIfNull(query);
        ArgumentOutOfRangeException.ThrowIfLessThan(query.Limit, 1, nameof(query));
        ArgumentOutOfRangeException.ThrowIfGreaterThan(query.Limit, ReadModelQuery.MaxLimit, nameof(query));
        if (query.AfterId is { } after && StreamName.IndexOfUnpairedSurrogate(after) is var half and >= 0)
        {
            // No id holds one (writes refuse it), and where it sorts differs by engine: PostgreSQL cannot bind it, SQLite
            // would page after U+FFFD in its place.
            throw new ArgumentException(
                $"The query's AfterId '{StreamName.Printable(after)}' holds half of a surrogate pair (U+{(int)after[half]:X4}), which no document's id holds; start a page after the id of the last document of the page before.",
                nameof(query));
        }

        foreach (var (property, value) in query.Where)
        {
            if (property is not { Length: > 0 and <= 64 } || !PropertyName().IsMatch(property))
            {
                throw new ArgumentException($"'{property}' is not a queryable property name: use letters, digits and underscores, starting with a letter.", nameof(query));
            }

            ArgumentNullException.ThrowIfNull(value, nameof(query));
        }
    }

    /// <summary>Throws unless <paramref name="generation"/> is at least 1.</summary>
    public static void ValidateGeneration(int generation) => ArgumentOutOfRangeException.ThrowIfLessThan(generation, 1);

    /// <summary>
    /// Validates the arguments of <see cref="IReadModelStore.UpdateAsync"/> (the table, the generation, the id and the change)
    /// and returns the change to run: refusing what no store can take (<see cref="Internal.StorableReadModelWrites.Storable(string, string, string, string, Func{string?, string?})"/>,
    /// and text that is not JSON),
    /// as a projection's writes are, so a direct write is refused alike on every engine.
    /// </summary>
    public static Func<string?, string?> ValidateUpdate(string table, int generation, string id, Func<string?, string?> change)
    {
        Validate(table);
        ValidateGeneration(generation);
        ArgumentNullException.ThrowIfNull(id);
        ArgumentNullException.ThrowIfNull(change);
        return Internal.StorableReadModelWrites.Storable("Caller of", "IReadModelStore.UpdateAsync", table, id, change, checkJson: true);
    }

    [GeneratedRegex("^[a-z][a-z0-9_]*$", RegexOptions.CultureInvariant)]
    private static partial Regex TableName();

    [GeneratedRegex("^[A-Za-z][A-Za-z0-9_]*$", RegexOptions.CultureInvariant)]
    private static partial Regex PropertyName();
}
