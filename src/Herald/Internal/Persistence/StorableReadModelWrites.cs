using System.Globalization;
using System.Text;
using Herald.EventSourcing;

namespace Herald.Internal;

/// <summary>
/// What every read-model store refuses alike, so a write that one engine cannot store fails the same way on all of them,
/// naming its writer, table and document, rather than only on PostgreSQL with a bare error naming neither.
/// </summary>
/// <remarks>An extension point for Herald's adapter packages, not for application code; it may change in any release.</remarks>
public static class StorableReadModelWrites
{
    /// <summary>
    /// The longest document id, in UTF-8 bytes: PostgreSQL's primary-key index holds an entry of at most about 2.7 kB (a bare
    /// 54000 beyond), and every store refuses alike. Five times the longest stream name (200 characters of up to 4 bytes).
    /// </summary>
    internal const int MaxIdBytes = 1024;

    /// <summary>
    /// True when <paramref name="key"/> holds U+0000 or half of a surrogate pair, which no document's id nor string holds
    /// (writes refuse them; PostgreSQL cannot bind them, SQLite would read U+FFFD): a lookup by it finds nothing, on every
    /// store, without asking the engine.
    /// </summary>
    public static bool NoDocumentHolds(string key)
    {
        ArgumentNullException.ThrowIfNull(key);
        return key.Contains('\0', StringComparison.Ordinal) || StreamName.IndexOfUnpairedSurrogate(key) >= 0;
    }

    /// <summary>
    /// <paramref name="change"/> of the document <paramref name="id"/>, refusing the JSON it returns when a string in it holds
    /// U+0000; throws at once when <paramref name="id"/> holds it, or half of a surrogate pair, or is longer than 1,024 UTF-8 bytes. <paramref name="writerKind"/> and <paramref name="writerName"/>
    /// name who writes ("Projection", "orders"), joined only for the error, so a write that passes allocates no label.
    /// </summary>
    public static Func<string?, string?> Storable(string writerKind, string writerName, string table, string id, Func<string?, string?> change)
    {
        ArgumentNullException.ThrowIfNull(writerKind);
        ArgumentNullException.ThrowIfNull(writerName);
        ArgumentNullException.ThrowIfNull(table);
        ArgumentNullException.ThrowIfNull(id);
        ArgumentNullException.ThrowIfNull(change);

        // PostgreSQL's text cannot hold U+0000 either (a bare 22021); the message escapes it, since the error itself may be
        // stored there (a dead letter's error message).
        if (id.Contains('\0', StringComparison.Ordinal))
        {
            throw new InvalidOperationException(
                $"{writerKind} '{writerName}' cannot write document '{id.Replace("\0", "\\u0000", StringComparison.Ordinal)}' of read model '{table}': its id holds the character U+0000, which PostgreSQL cannot store, so no read-model store takes it. Remove or replace the character in the id.");
        }

        // Not valid UTF-16 (an id cut inside an emoji): SQLite would store U+FFFD in its place, so two such ids would share a
        // document, and PostgreSQL refuses it with a bare encoding error.
        if (StreamName.IndexOfUnpairedSurrogate(id) is var half and >= 0)
        {
            throw new InvalidOperationException(
                $"{writerKind} '{writerName}' cannot write document '{StreamName.Printable(id)}' of read model '{table}': its id holds half of a surrogate pair (U+{(int)id[half]:X4}), as when an id is cut inside an emoji, which SQLite would store as U+FFFD (so two such ids would share a document) and PostgreSQL cannot store, so no read-model store takes it. Use the whole character or none of it.");
        }

        // Three bytes at most per UTF-16 unit (a pair makes four), so only a long id is counted; counted exactly, as it is
        // valid UTF-16 here.
        if (id.Length > MaxIdBytes / 3 && Encoding.UTF8.GetByteCount(id) is var bytes and > MaxIdBytes)
        {
            throw new InvalidOperationException(string.Create(
                CultureInfo.InvariantCulture,
                $"{writerKind} '{writerName}' cannot write document '{StreamName.Printable(id[..40])}...' of read model '{table}': its id is {bytes} bytes long in UTF-8, and at most {MaxIdBytes} are allowed (PostgreSQL's primary-key index cannot hold much longer ones), so no read-model store takes it. Use a shorter id, such as a hash of the long one."));
        }

        // PostgreSQL's jsonb cannot hold U+0000 (a bare 22P05 at its commit).
        return current =>
        {
            var json = change(current);
            if (json is not null && HoldsNul(json))
            {
                throw new InvalidOperationException(
                    $"{writerKind} '{writerName}' cannot write document '{id}' of read model '{table}': a string in it holds the character U+0000, which PostgreSQL's jsonb cannot store, so no read-model store takes it. Remove or replace the character before writing it.");
            }

            return json;
        };
    }

    // A JSON escape \u0000 (not an escaped backslash followed by "u0000"), or a raw NUL.
    private static bool HoldsNul(string json)
    {
        for (var i = json.IndexOf('\\', StringComparison.Ordinal); i >= 0 && i + 1 < json.Length; i = json.IndexOf('\\', i + 2))
        {
            if (json[i + 1] == 'u' && json.AsSpan(i + 2).StartsWith("0000", StringComparison.Ordinal))
            {
                return true;
            }
        }

        return json.Contains('\0', StringComparison.Ordinal);
    }
}
