using StackExchange.Redis;

namespace Herald.Redis.Internal;

/// <summary>Runs Herald's Lua scripts.</summary>
internal static class RedisScripts
{
    /// <summary>
    /// Runs <paramref name="script"/>, and once more when the connection dropped or timed out before its reply (a failover,
    /// a proxy restart, an idle timeout cut it): the script may or may not have run, and the multiplexer sends the second
    /// one once it has reconnected. Only for scripts that give the same outcome when run twice with the same arguments.
    /// </summary>
    public static async Task<RedisResult> EvaluateAgainIfCutAsync(IDatabase database, string script, RedisKey[] keys, RedisValue[] values)
    {
        try
        {
            return await database.ScriptEvaluateAsync(script, keys, values).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is RedisConnectionException or RedisTimeoutException)
        {
            return await database.ScriptEvaluateAsync(script, keys, values).ConfigureAwait(false);
        }
    }
}
