namespace Herald.AspNetCore.Correlation;

/// <summary>The correlation header and the rules for its value.</summary>
internal static class CorrelationIds
{
    public const string HeaderName = "X-Correlation-Id";
    public const string ActivityKey = "herald.correlation_id";
    public const int MaxLength = 128;

    /// <summary>A new id: a Guid v7 without dashes (time-ordered, 32 characters).</summary>
    public static string NewId() => Guid.CreateVersion7().ToString("N");

    /// <summary>Null when the value is a usable id: 1 to 128 visible ASCII characters (no spaces or control characters).</summary>
    public static string? Problem(string value)
    {
        if (value.Length > MaxLength)
        {
            return $"it is {value.Length} characters long; at most {MaxLength} are allowed";
        }

        foreach (var c in value)
        {
            if (c is < '!' or > '~')
            {
                return "it may hold only visible ASCII characters (no spaces or control characters)";
            }
        }

        return null;
    }
}
