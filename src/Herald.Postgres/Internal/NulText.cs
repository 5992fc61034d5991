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

    /// <summary>
    /// The text with each U+0000, and each half of a surrogate pair without its other half (which UTF-8, so PostgreSQL's
    /// client, cannot encode), replaced by U+FFFD, for texts only read by people (error messages), never refused. The same
    /// instance when it holds neither.
    /// </summary>
    [return: NotNullIfNotNull(nameof(text))]
    public static string? Readable(string? text)
    {
        if (text is null || (!text.Contains('\0', StringComparison.Ordinal) && text.AsSpan().IndexOfAnyInRange('\uD800', '\uDFFF') < 0))
        {
            return text;
        }

        return string.Create(text.Length, text, static (chars, text) =>
        {
            text.CopyTo(chars);
            for (var i = 0; i < chars.Length; i++)
            {
                if (char.IsHighSurrogate(chars[i]) && i + 1 < chars.Length && char.IsLowSurrogate(chars[i + 1]))
                {
                    i++;
                }
                else if (chars[i] == '\0' || char.IsSurrogate(chars[i]))
                {
                    chars[i] = '\uFFFD';
                }
            }
        });
    }

    /// <summary>Throws an <see cref="ArgumentException"/> for <paramref name="parameter"/>, naming <paramref name="field"/>, when <paramref name="value"/> holds U+0000.</summary>
    public static void ThrowIfHeld(string? value, string field, string parameter)
    {
        if (Holds(value))
        {
            throw Refused(value!, field, parameter, of: null);
        }
    }

    /// <summary>
    /// As <see cref="ThrowIfHeld(string?, string, string)"/>, also naming what the value belongs to: <paramref name="of"/> of
    /// <paramref name="state"/>, made only when refusing (a static lambda), so a write that passes allocates nothing here.
    /// </summary>
    public static void ThrowIfHeld<TState>(string? value, string field, string parameter, TState state, Func<TState, string> of)
    {
        if (Holds(value))
        {
            throw Refused(value!, field, parameter, of(state));
        }
    }

    /// <summary>
    /// Throws for an envelope whose text attributes (stored as text columns) hold U+0000, naming the attribute and what it
    /// belongs to. Headers are not checked: <see cref="EnvelopeColumns.FormatHeaders"/> stores them exactly.
    /// </summary>
    public static void ThrowIfHeld<TState>(Envelope envelope, string parameter, TState state, Func<TState, string> of)
    {
        ThrowIfHeld(envelope.MessageType, "message type", parameter, state, of);
        ThrowIfHeld(envelope.CorrelationId, "correlation id", parameter, state, of);
        ThrowIfHeld(envelope.CausationId, "causation id", parameter, state, of);
        ThrowIfHeld(envelope.UserId, "user id", parameter, state, of);
        ThrowIfHeld(envelope.PartitionKey, "partition key", parameter, state, of);
        ThrowIfHeld(envelope.ContentType, "content type", parameter, state, of);
    }

    /// <summary>
    /// As <see cref="ThrowIfHeld{TState}(Envelope, string, TState, Func{TState, string})"/>, with the envelope's correlation id
    /// as the caller read it for its row (an own-id correlation is made into text on each read), so a send that passes
    /// allocates nothing here.
    /// </summary>
    public static void ThrowIfHeld<TState>(Envelope envelope, string? correlationId, string parameter, TState state, Func<TState, string> of)
    {
        if (Holds(envelope.MessageType) || Holds(correlationId) || Holds(envelope.CausationId) || Holds(envelope.UserId)
            || Holds(envelope.PartitionKey) || Holds(envelope.ContentType))
        {
            ThrowIfHeld(envelope, parameter, state, of);
        }
    }

    // Escaped: the message itself may end up stored here (a dead letter's error).
    private static ArgumentException Refused(string value, string field, string parameter, string? of) => new(
        $"The {field} '{value.Replace("\0", "\\u0000", StringComparison.Ordinal)}'{(of is null ? "" : " of " + of)} holds the character U+0000, which PostgreSQL cannot store. Remove or replace the character.",
        parameter);
}
