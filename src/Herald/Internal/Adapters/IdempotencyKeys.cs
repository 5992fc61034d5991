namespace Herald.Internal;

/// <summary>
/// An idempotency store's keys as it stores them: the caller's key behind the host application's prefix, so applications
/// sharing a database keep their own keys (the instances of one application share them).
/// </summary>
/// <remarks>An extension point for Herald's adapter packages, not for application code; it may change in any release.</remarks>
public sealed class IdempotencyKeys
{
    private readonly string _prefix;

    /// <summary>Keys behind <paramref name="prefix"/>, the one the host passes the store (empty for none).</summary>
    public IdempotencyKeys(string prefix)
    {
        ArgumentNullException.ThrowIfNull(prefix);
        _prefix = prefix;
    }

    /// <summary><paramref name="key"/> as stored; a null or empty key is refused.</summary>
    public string Scoped(string key)
    {
        ArgumentException.ThrowIfNullOrEmpty(key);
        return _prefix + key;
    }

    /// <summary>
    /// The prefix of the application named <paramref name="applicationName"/>: its name with its length, so no two names give
    /// the same prefix; empty without a name.
    /// </summary>
    internal static string Prefix(string? applicationName) =>
        string.IsNullOrEmpty(applicationName)
            ? ""
            : string.Create(System.Globalization.CultureInfo.InvariantCulture, $"{applicationName.Length}:{applicationName}:");
}
