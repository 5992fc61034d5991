namespace Herald.EventSourcing;

/// <summary>Rules for stream names (<c>category-id</c>), shared by every event store so they all accept the same names.</summary>
public static class StreamName
{
    /// <summary>Longest accepted stream name, in characters.</summary>
    public const int MaxLength = 200;

    /// <summary>Separates the category from the id; the category is everything before the first one.</summary>
    public const char CategorySeparator = '-';

    /// <summary>
    /// Builds <c>{category}-{id}</c>; the category must not contain <see cref="CategorySeparator"/>. An empty id, or one that
    /// makes a name <see cref="Validate"/> refuses, throws <see cref="InvalidStreamNameException"/>.
    /// </summary>
    public static string For(string category, string id)
    {
        ArgumentException.ThrowIfNullOrEmpty(category);
        ArgumentNullException.ThrowIfNull(id);
        if (id.Length == 0)
        {
            // Often a client's id, like the rules Validate checks: not a bug of the caller's.
            throw new InvalidStreamNameException($"The id is empty; a stream name needs one after the category, like '{category}-42'.", nameof(id));
        }

        if (category.Contains(CategorySeparator, StringComparison.Ordinal))
        {
            throw new ArgumentException($"The category '{category}' contains '{CategorySeparator}', which separates the category from the id.", nameof(category));
        }

        var stream = string.Concat(category, CategorySeparator.ToString(), id);
        Validate(stream);
        return stream;
    }

    /// <summary>The category of a stream: the part before the first '-', or the whole name when it has none.</summary>
    public static string GetCategory(string stream)
    {
        ArgumentNullException.ThrowIfNull(stream);
        var separator = stream.IndexOf(CategorySeparator, StringComparison.Ordinal);
        return separator < 0 ? stream : stream[..separator];
    }

    /// <summary>Throws <see cref="InvalidStreamNameException"/> when the name is empty, too long, starts with '$' or holds whitespace, control characters or half of a surrogate pair.</summary>
    public static void Validate(string stream)
    {
        if (TryGetError(stream, out var error))
        {
            throw new InvalidStreamNameException(error, nameof(stream));
        }
    }

    /// <summary>True when the name is acceptable; otherwise false with the reason.</summary>
    public static bool IsValid(string? stream, out string? error) => !TryGetError(stream, out error);

    private static bool TryGetError(string? stream, [System.Diagnostics.CodeAnalysis.NotNullWhen(true)] out string? error)
    {
        error = null;
        if (string.IsNullOrEmpty(stream))
        {
            error = "The stream name is empty. Use a name like 'order-42' (category-id).";
        }
        else if (stream.Length > MaxLength)
        {
            error = $"The stream name '{Printable(stream[..40])}...' has {stream.Length} characters; at most {MaxLength} are allowed.";
        }
        else if (stream[0] == '$')
        {
            error = $"The stream name '{stream}' starts with '$', which is reserved for system streams such as '$all'.";
        }
        else
        {
            for (var i = 0; i < stream.Length; i++)
            {
                var c = stream[i];
                if (char.IsWhiteSpace(c) || char.IsControl(c))
                {
                    error = $"The stream name '{Printable(stream)}' contains whitespace or a control character (U+{(int)c:X4}); use a name like 'order-42'.";
                    break;
                }

                if (IsUnpairedSurrogate(stream, i))
                {
                    // Not valid UTF-16: SQLite would store it as U+FFFD (so two such names share a stream), PostgreSQL refuses it.
                    error = $"The stream name '{Printable(stream)}' contains half of a surrogate pair (U+{(int)c:X4}), as when an id is cut inside an emoji; use a name like 'order-42'.";
                    break;
                }

                if (char.IsHighSurrogate(c))
                {
                    i++;
                }
            }
        }

        return error is not null;
    }

    /// <summary>True when <paramref name="value"/> holds half of a surrogate pair without its other half (a quick scan first: most text holds no surrogate).</summary>
    internal static bool HoldsUnpairedSurrogate(string? value) =>
        value is not null && value.AsSpan().ContainsAnyInRange('\uD800', '\uDFFF') && IndexOfUnpairedSurrogate(value) >= 0;

    /// <summary>
    /// Throws an <see cref="ArgumentException"/> naming <paramref name="what"/> when <paramref name="value"/> holds half of a
    /// surrogate pair, which SQLite would store as U+FFFD and PostgreSQL's client cannot encode: no store keeps it as written.
    /// </summary>
    internal static void ThrowIfHoldsUnpairedSurrogate(string? value, string what, string paramName)
    {
        if (HoldsUnpairedSurrogate(value))
        {
            throw new ArgumentException(
                $"The {what} '{Printable(value!)}' holds half of a surrogate pair (as when a name is cut inside an emoji); no store can keep it as written.",
                paramName);
        }
    }

    /// <summary>The index of the first half of a surrogate pair without its other half in <paramref name="value"/>, or -1.</summary>
    internal static int IndexOfUnpairedSurrogate(string value)
    {
        for (var i = 0; i < value.Length; i++)
        {
            if (IsUnpairedSurrogate(value, i))
            {
                return i;
            }
        }

        return -1;
    }

    // The name as an error message can carry it (to a log, or a dead letter stored in a database).
    internal static string Printable(string value)
    {
        var chars = value.ToCharArray();
        for (var i = 0; i < chars.Length; i++)
        {
            if (char.IsControl(chars[i]) || IsUnpairedSurrogate(value, i))
            {
                chars[i] = '?';
            }
        }

        return new string(chars);
    }

    private static bool IsUnpairedSurrogate(string value, int i) =>
        char.IsHighSurrogate(value[i])
            ? i + 1 == value.Length || !char.IsLowSurrogate(value[i + 1])
            : char.IsLowSurrogate(value[i]) && (i == 0 || !char.IsHighSurrogate(value[i - 1]));

}
