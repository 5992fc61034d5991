namespace Herald.Messages;

/// <summary>Content types Herald writes into <see cref="Envelope.ContentType"/>.</summary>
public static class ContentTypes
{
    /// <summary>JSON, the default body encoding.</summary>
    public const string Json = "application/json";

    /// <summary>True for JSON (<c>application/json</c> or any <c>+json</c> type, parameters such as a charset allowed) and for none at all.</summary>
    internal static bool IsJson(string? contentType)
    {
        if (string.IsNullOrWhiteSpace(contentType) || ReferenceEquals(contentType, Json))
        {
            return true;
        }

        var media = MediaType(contentType);
        return media.Equals(Json, StringComparison.OrdinalIgnoreCase) || media.EndsWith("+json", StringComparison.OrdinalIgnoreCase);
    }

    /// <summary>True when both name the same media type, whatever their parameters (<c>application/x-foo; v=1</c> is <c>application/x-foo</c>).</summary>
    internal static bool IsSameMediaType(string contentType, string other)
    {
        ArgumentNullException.ThrowIfNull(contentType);
        ArgumentNullException.ThrowIfNull(other);
        return MediaType(contentType).Equals(MediaType(other), StringComparison.OrdinalIgnoreCase);
    }

    private static ReadOnlySpan<char> MediaType(string contentType)
    {
        var media = contentType.AsSpan();
        var parameters = media.IndexOf(';');
        return (parameters >= 0 ? media[..parameters] : media).Trim();
    }
}
