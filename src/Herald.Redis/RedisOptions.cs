using Herald.Internal;
using StackExchange.Redis;

namespace Herald.Redis;

/// <summary>
/// Settings of Herald's Redis stores, set with <c>h.UseRedis("localhost:6379", o => ...)</c>; validated at start.
/// </summary>
/// <remarks>
/// Expiry follows Herald's <see cref="TimeProvider"/>, never the Redis server's clock: each key stores the time it
/// expires (computed from the clock) and every script compares it with the caller's "now". Redis also expires each key
/// itself, <see cref="ExpiryGrace"/> after that logical time, only so keys do not live forever.
/// </remarks>
public sealed class RedisOptions
{
    /// <summary>The key prefix without a host, and the start of a host's default one (<c>herald:{application name}:</c>).</summary>
    public const string DefaultKeyPrefix = "herald:";

    /// <summary>A StackExchange.Redis configuration string (<c>"host:6379,password=..."</c>); ignored when <see cref="ConnectionMultiplexer"/> is set.</summary>
    public string? Configuration { get; set; }

    /// <summary>An existing connection to share with the rest of the application; Herald then neither opens nor disposes one.</summary>
    public IConnectionMultiplexer? ConnectionMultiplexer { get; set; }

    /// <summary>
    /// Put before every key Herald writes, so several applications can share one database; it may not hold '{' or '}' (a
    /// Redis Cluster hash tag). Default under a host
    /// <c>"herald:{IHostEnvironment.ApplicationName}:"</c>, so the instances of one application share their keys and other
    /// applications do not see them (set one prefix where differently named programs must share keys); <c>"herald:"</c> without one.
    /// </summary>
    public string KeyPrefix { get; set; } = DefaultKeyPrefix;

    /// <summary>
    /// How long after its logical expiry Redis deletes a key by itself (PEXPIRE). It covers clock differences between
    /// nodes; a test whose fake clock stands still for longer than a key's ttl plus this grace loses the key. Default 5 minutes.
    /// </summary>
    public TimeSpan ExpiryGrace { get; set; } = TimeSpan.FromMinutes(5);

    /// <summary>
    /// How long an inbox mark made in a unit of work that has not yet committed holds the message id (at most the window).
    /// A duplicate arriving meanwhile waits for that unit of work to commit (it is then skipped) or roll back (it then
    /// runs); if the process died, it runs once this time has passed. The mark is renewed every third of it while its unit of
    /// work is open, so a handler may run longer. Default 30 seconds.
    /// </summary>
    public TimeSpan InboxPendingTimeout { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>Adds every setting that is missing or out of range to <paramref name="problems"/>.</summary>
    internal static void Check(RedisOptions options, OptionsProblems problems)
    {
        if (options.ConnectionMultiplexer is null)
        {
            if (string.IsNullOrWhiteSpace(options.Configuration))
            {
                problems.Add(nameof(Configuration), "is empty; give a configuration string (\"host:6379\") or a ConnectionMultiplexer.");
            }
            else if (ConfigurationProblem(options.Configuration) is { } problem)
            {
                problems.Add(nameof(Configuration), problem);
            }
        }

        if (options.KeyPrefix is null)
        {
            problems.Add(nameof(KeyPrefix), "must not be null; use \"\" for no prefix.");
        }
        else if (options.KeyPrefix.AsSpan().IndexOfAny('{', '}') >= 0)
        {
            // "{}" leaves the inbox's "{inbox}" tag without effect, so the keys one script writes fall in different slots
            // (CROSSSLOT); "{x}" puts every key in one slot.
            problems.Add(
                nameof(KeyPrefix),
                $"\"{options.KeyPrefix}\" holds a brace, which makes a Redis Cluster hash tag of every key (or cancels Herald's own, \"{{inbox}}\"), " +
                "so keys that must share a slot would not, or every key would crowd into one; use a prefix without '{' and '}'.");
        }

        problems.NotNegative(nameof(ExpiryGrace), options.ExpiryGrace);
        problems.Positive(nameof(InboxPendingTimeout), options.InboxPendingTimeout);

        // The grace is added to every key's ttl and the pending mark renewed on a timer: longer ones threw on every call.
        problems.AtMostLongestSpan(nameof(ExpiryGrace), options.ExpiryGrace);
        problems.AtMostLongestWait(nameof(InboxPendingTimeout), options.InboxPendingTimeout);
    }

    internal RedisOptions Clone() => (RedisOptions)MemberwiseClone();

    /// <summary>The default prefix of the application named <paramref name="applicationName"/> (none: <see cref="DefaultKeyPrefix"/>).</summary>
    internal static string ApplicationKeyPrefix(string? applicationName) =>
        string.IsNullOrEmpty(applicationName)
            ? DefaultKeyPrefix
            // Braces would make a Redis Cluster hash tag of the name, moving the inbox's "{inbox}" keys to other slots.
            : DefaultKeyPrefix + applicationName.Replace('{', '(').Replace('}', ')') + ":";

    private static string? ConfigurationProblem(string configuration)
    {
        try
        {
            return ConfigurationOptions.Parse(configuration).EndPoints.Count == 0 ? "names no server; give at least one \"host:port\"." : null;
        }
        catch (ArgumentException ex)
        {
            return $"cannot be read: {UserInfo.Redact(ex.Message)}";
        }
    }
}
