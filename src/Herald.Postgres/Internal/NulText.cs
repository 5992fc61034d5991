using System.Diagnostics.CodeAnalysis;
using Herald.Messages;

namespace Herald.Postgres.Internal;

/// <summary>
/// PostgreSQL's text cannot hold U+0000: any statement binding one fails with a bare 22021 that names no value. So a key
/// holding it names no stored row (a lookup answers "none" without asking) and cannot be written (refused, naming its field).
/// </summary>
internal static class NulText
{
    /// <summary>True when <paramref name="value"/> holds U+0000, which no row of PostgreSQL can.</summary>
    public static bool Holds(string? value) => value is not null && value.Contains('\0', StringComparison.Ordinal);

    /// <summary>
    /// The part of a keyset cursor before its first U+0000. Stored keys hold none, so exactly the keys after that part lie
    /// after the whole cursor (U+0000 sorts first in byte order).
    /// </summary>
    public static string BeforeNul(string value)
    {
        var nul = value.IndexOf('\0', StringComparison.Ordinal);
        return nul < 0 ? value : value[..nul];
    }

    /// <summary>The text with each U+0000 replaced by U+FFFD, for texts only read by people (error messages), never refused.</summary>
    [return: NotNullIfNotNull(nameof(text))]
    public static string? Readable(string? text) => text?.Replace('\0', '\uFFFD');

    /// <summary>
    /// Throws an <see cref="ArgumentException"/> for <paramref name="parameter"/>, naming <paramref name="field"/> (and what
    /// it belongs to, <paramref name="of"/>), when <paramref name="value"/> holds U+0000.
    /// </summary>
    public static void ThrowIfHeld(string? value, string field, string parameter, string? of = null)
    {
        if (Holds(value))
        {
            // Escaped: the message itself may end up stored here (a dead letter's error).
            throw new ArgumentException(
                $"The {field} '{value!.Replace("\0", "\\u0000", StringComparison.Ordinal)}'{(of is null ? "" : " of " + of)} holds the character U+0000, which PostgreSQL cannot store. Remove or replace the character.",
                parameter);
        }
    }

    /// <summary>
    /// Throws for an envelope whose text attributes (stored as text columns) hold U+0000, naming the attribute and
    /// <paramref name="of"/>. Headers are not checked: <see cref="EnvelopeColumns.FormatHeaders"/> stores them exactly.
    /// </summary>
    public static void ThrowIfHeld(Envelope envelope, string parameter, string of)
    {
        ThrowIfHeld(envelope.MessageType, "message type", parameter, of);
        ThrowIfHeld(envelope.CorrelationId, "correlation id", parameter, of);
        ThrowIfHeld(envelope.CausationId, "causation id", parameter, of);
        ThrowIfHeld(envelope.UserId, "user id", parameter, of);
        ThrowIfHeld(envelope.PartitionKey, "partition key", parameter, of);
        ThrowIfHeld(envelope.ContentType, "content type", parameter, of);
    }
}
