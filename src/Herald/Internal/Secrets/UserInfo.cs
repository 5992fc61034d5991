using System.Text.RegularExpressions;

namespace Herald.Internal;

/// <summary>
/// Takes credentials out of text before it goes into an exception or a log: the user info of a URI
/// (<c>amqp://user:secret@host</c> becomes <c>amqp://***@host</c>) and password settings of connection strings
/// (<c>Password=secret</c> becomes <c>Password=***</c>). An extension point for adapter packages, not for application code.
/// </summary>
public static partial class UserInfo
{
    /// <summary>The text with every URI user info and password setting replaced by <c>***</c>; null stays null.</summary>
    public static string? Redact(string? text) =>
        text is null ? null : PasswordSetting().Replace(UriUserInfo().Replace(text, "://***@"), "${key}=***");

    /// <summary>The URI as text, without its user info.</summary>
    public static string? Redact(Uri? uri) => uri is null ? null : Redact(uri.OriginalString);

    // Anything between the scheme and an @ before the host: user, user:password, with or without escapes.
    [GeneratedRegex(@"://[^/?#\s@]*@", RegexOptions.CultureInvariant)]
    private static partial Regex UriUserInfo();

    // Npgsql, Microsoft.Data.Sqlite and StackExchange.Redis spellings; a value runs to the next separator.
    [GeneratedRegex(@"(?<key>\b(?:password|pwd|passwd)\s*)=[^;,]*", RegexOptions.CultureInvariant | RegexOptions.IgnoreCase)]
    private static partial Regex PasswordSetting();
}
