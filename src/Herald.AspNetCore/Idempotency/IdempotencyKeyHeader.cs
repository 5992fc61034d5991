using System.Text;

namespace Herald.AspNetCore.Idempotency;

/// <summary>
/// The <c>Idempotency-Key</c> header. The IETF draft makes its value a structured-field string (<c>"8e03978e-..."</c>, quoted,
/// with <c>\"</c> and <c>\\</c> escapes); a bare token of visible ASCII is accepted too, as most clients send one.
/// </summary>
internal static class IdempotencyKeyHeader
{
    public const string Name = "Idempotency-Key";
    public const string ReplayedHeader = "Idempotency-Replayed";

    /// <summary>The key, or null with the reason it is not one.</summary>
    public static string? Parse(string raw, int maxLength, out string? problem)
    {
        problem = null;
        string key;
        if (raw.Length >= 2 && raw[0] == '"' && raw[^1] == '"')
        {
            var builder = new StringBuilder(raw.Length);
            for (var i = 1; i < raw.Length - 1; i++)
            {
                var c = raw[i];
                if (c == '\\')
                {
                    if (i + 1 >= raw.Length - 1 || raw[i + 1] is not ('"' or '\\'))
                    {
                        problem = "a backslash in a quoted key may only escape '\"' or '\\'";
                        return null;
                    }

                    c = raw[++i];
                }
                else if (c == '"' || c is < ' ' or > '~')
                {
                    problem = "a quoted key may hold only printable ASCII characters, with '\"' escaped";
                    return null;
                }

                builder.Append(c);
            }

            key = builder.ToString();
        }
        else
        {
            foreach (var c in raw)
            {
                if (c is < '!' or > '~' or '"' or '\\')
                {
                    problem = "an unquoted key may hold only visible ASCII characters other than '\"' and '\\' (send it as a quoted structured-field string to use those or spaces)";
                    return null;
                }
            }

            key = raw;
        }

        if (key.Length == 0)
        {
            problem = "it is empty";
            return null;
        }

        if (key.Length > maxLength)
        {
            problem = $"it is {key.Length} characters long; at most {maxLength} are allowed";
            return null;
        }

        return key;
    }
}
