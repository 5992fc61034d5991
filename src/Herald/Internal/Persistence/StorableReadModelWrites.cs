using System.Buffers;
using System.Globalization;
using System.Text;
using System.Text.Json;
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
    /// Throws <see cref="InvalidOperationException"/> when <paramref name="generation"/> of <paramref name="table"/> is
    /// <paramref name="activeGeneration"/>, which reads see: only another generation can be <paramref name="verb"/> ("reset", "dropped").
    /// </summary>
    public static void ThrowIfActive(string table, int generation, int activeGeneration, string verb)
    {
        if (generation == activeGeneration)
        {
            throw new InvalidOperationException($"Generation {generation} of read model '{table}' is the active one and cannot be {verb}.");
        }
    }

    /// <summary>
    /// <paramref name="change"/> of the document <paramref name="id"/>, refusing the JSON it returns when a string in it holds
    /// U+0000 or half of a surrogate pair; throws at once when <paramref name="id"/> holds either, or is longer than 1,024 UTF-8
    /// bytes. <paramref name="writerKind"/> and <paramref name="writerName"/> name who writes ("Projection", "orders"), joined
    /// only for the error, so a write that passes allocates no label. A change it already checked is returned as it is, so
    /// the store's own check (<see cref="Projections.ReadModelNames.ValidateUpdate"/>) of a projection's write adds nothing.
    /// </summary>
    public static Func<string?, string?> Storable(string writerKind, string writerName, string table, string id, Func<string?, string?> change) =>
        Storable(writerKind, writerName, table, id, change, checkJson: false);

    /// <summary>
    /// As the public overload; with <paramref name="checkJson"/> it also refuses what is not JSON text, which no store takes
    /// either (SQLite's CHECK, PostgreSQL's jsonb): for a caller's own JSON, not a projection's (its serializer writes JSON).
    /// </summary>
    internal static Func<string?, string?> Storable(string writerKind, string writerName, string table, string id, Func<string?, string?> change, bool checkJson)
    {
        ArgumentNullException.ThrowIfNull(writerKind);
        ArgumentNullException.ThrowIfNull(writerName);
        ArgumentNullException.ThrowIfNull(table);
        ArgumentNullException.ThrowIfNull(id);
        ArgumentNullException.ThrowIfNull(change);
        if (change.Target is StorableChange)
        {
            return change;
        }

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

        return new StorableChange(writerKind, writerName, table, id, change, checkJson).Apply;
    }

    // A class of its own rather than a lambda, so a change it made is recognised (above) and not checked twice.
    private sealed class StorableChange(string writerKind, string writerName, string table, string id, Func<string?, string?> change, bool checkJson)
    {
        public string? Apply(string? current)
        {
            var json = change(current);
            if (checkJson && json is not null && !IsJson(json))
            {
                throw new InvalidOperationException(
                    $"{writerKind} '{writerName}' cannot write document '{StreamName.Printable(id)}' of read model '{table}': its text is not JSON (one JSON value, without comments or trailing commas), which no read-model store takes. Write what a JSON serializer makes of the document.");
            }

            if (json is not null && Unstorable(json) is { } what)
            {
                // PostgreSQL's jsonb cannot hold U+0000 (a bare 22P05 at its commit) nor half of a pair (a bare 22P02).
                throw new InvalidOperationException(
                    $"{writerKind} '{writerName}' cannot write document '{id}' of read model '{table}': a string in it holds {what}, which PostgreSQL's jsonb cannot store, so no read-model store takes it. Remove or replace the character before writing it.");
            }

            return json;
        }
    }

    // What of the JSON PostgreSQL's jsonb refuses: a NUL or half of a surrogate pair, raw or as a \u escape (not an escaped
    // backslash followed by "u..."), or null when it holds neither.
    private static string? Unstorable(string json)
    {
        if (json.Contains('\0', StringComparison.Ordinal))
        {
            return "the character U+0000";
        }

        if (StreamName.IndexOfUnpairedSurrogate(json) >= 0)
        {
            return "half of a surrogate pair";
        }

        for (var i = json.IndexOf('\\', StringComparison.Ordinal); i >= 0 && i + 1 < json.Length; i = json.IndexOf('\\', i + 2))
        {
            if (json[i + 1] != 'u' || !TryEscaped(json, i, out var unit))
            {
                continue;
            }

            if (unit == 0)
            {
                return "the character U+0000";
            }

            if (char.IsHighSurrogate(unit) && TryEscaped(json, i + 6, out var low) && char.IsLowSurrogate(low))
            {
                i += 6; // The pair's second escape is read: the loop goes on after it.
            }
            else if (char.IsSurrogate(unit))
            {
                return "half of a surrogate pair";
            }
        }

        return null;
    }

    // One JSON value and nothing after it but whitespace, as SQLite's json_valid and PostgreSQL's jsonb take (nested as
    // deep as they take it).
    private static bool IsJson(string json)
    {
        var bytes = ArrayPool<byte>.Shared.Rent(Encoding.UTF8.GetMaxByteCount(json.Length));
        try
        {
            var reader = new Utf8JsonReader(bytes.AsSpan(0, Encoding.UTF8.GetBytes(json, bytes)), new JsonReaderOptions { MaxDepth = 1000 });
            while (reader.Read())
            {
            }

            return true;
        }
        catch (JsonException)
        {
            return false;
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(bytes);
        }
    }

    // The UTF-16 unit of the escape \uXXXX at position i.
    private static bool TryEscaped(string json, int i, out char unit)
    {
        unit = default;
        if (i + 6 > json.Length || json[i] != '\\' || json[i + 1] != 'u'
            || !ushort.TryParse(json.AsSpan(i + 2, 4), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture, out var value))
        {
            return false;
        }

        unit = (char)value;
        return true;
    }
}
