using System.Text;

namespace Herald.Postgres.Persistence;

/// <summary>
/// Stable 64-bit advisory lock keys (FNV-1a of a name), so every node, on every version of Herald, takes the same lock for
/// the same purpose. Changing a key's text lets two versions hold "the same" lock at once: never change one.
/// </summary>
internal static class AdvisoryLockKey
{
    private const string Prefix = "herald.schema:";

    /// <summary>The lock that serializes migrations of <paramref name="schema"/>.</summary>
    public static long ForMigrations(string schema) => Hash(Prefix + schema);

    /// <summary>
    /// The lock whose holder leads <paramref name="resource"/> in <paramref name="schema"/>. For the outbox relay's resource
    /// (<c>outbox-relay</c>) it is the key the outbox store used before leadership was a port, so old and new nodes in a
    /// rolling upgrade still elect one relay. The schema, a validated identifier without ':', comes last, so distinct pairs
    /// never share a text.
    /// </summary>
    public static long ForLeadership(string schema, string resource) => Hash(Prefix + resource + ":" + schema);

    /// <summary>The lock that serializes creating, emptying and dropping the storage of one read-model table's generation.</summary>
    public static long ForReadModelTable(string schema, string physicalTable) => Hash(Prefix + "read-model:" + physicalTable + ":" + schema);

    private static long Hash(string name)
    {
        var hash = 14695981039346656037UL;
        foreach (var b in Encoding.UTF8.GetBytes(name))
        {
            hash = unchecked((hash ^ b) * 1099511628211UL);
        }

        return unchecked((long)hash);
    }
}
