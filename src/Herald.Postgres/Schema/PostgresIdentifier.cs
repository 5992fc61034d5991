using Herald.Internal;

namespace Herald.Postgres.Schema;

/// <summary>Checks the names Herald puts into SQL text (the schema), so they never need escaping.</summary>
internal static class PostgresIdentifier
{
    /// <summary>Longest schema name: the notification channel adds "_events" and PostgreSQL names stop at 63 bytes.</summary>
    public const int MaxLength = 48;

    public static bool IsValid(string? name, out string? error)
    {
        error = null;
        if (string.IsNullOrEmpty(name))
        {
            error = "The schema name is empty; use a name like 'herald'.";
        }
        else if (name.Length > MaxLength)
        {
            error = $"The schema name '{name}' has {name.Length} characters; at most {MaxLength} are allowed.";
        }
        else if (name[0] is not ((>= 'a' and <= 'z') or '_'))
        {
            error = $"The schema name '{name}' must start with a lower-case letter or '_'.";
        }
        else if (name.StartsWith("pg_", StringComparison.Ordinal))
        {
            error = $"The schema name '{name}' starts with 'pg_', which PostgreSQL reserves.";
        }
        else
        {
            foreach (var c in name)
            {
                if (c is not ((>= 'a' and <= 'z') or (>= '0' and <= '9') or '_'))
                {
                    error = $"The schema name '{name}' may only hold lower-case letters, digits and '_'.";
                    break;
                }
            }
        }

        return error is null;
    }

    /// <summary>Adds a problem of the options' <c>Schema</c> setting unless <paramref name="schema"/> is a valid name.</summary>
    public static void CheckSchema(string? schema, OptionsProblems problems)
    {
        if (!IsValid(schema, out var error))
        {
            problems.Add("Schema", $"is refused: {error}");
        }
    }
}
