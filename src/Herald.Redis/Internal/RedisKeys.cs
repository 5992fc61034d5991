using System.Buffers;
using System.Text;
using System.Text.Unicode;
using StackExchange.Redis;

namespace Herald.Redis.Internal;

/// <summary>
/// Builds binary Redis keys from text so that distinct strings always give distinct keys (ordinal): well-formed text is
/// stored as its UTF-8 (readable in redis-cli); text with a lone surrogate, which UTF-8 cannot carry, as byte 0xFF (never
/// part of UTF-8) followed by its UTF-16 code units.
/// </summary>
internal static class RedisKeys
{
    public static RedisKey Build(string prefix, string text, string? suffix = null)
    {
        var buffer = new ArrayBufferWriter<byte>(prefix.Length + (text.Length * 3) + (suffix?.Length ?? 0) + 1);
        Append(buffer, prefix);
        Append(buffer, text);
        if (suffix is not null)
        {
            Append(buffer, suffix);
        }

        return buffer.WrittenSpan.ToArray();
    }

    private static void Append(ArrayBufferWriter<byte> buffer, string text)
    {
        var span = buffer.GetSpan(Encoding.UTF8.GetMaxByteCount(text.Length));
        if (Utf8.FromUtf16(text, span, out _, out var written, replaceInvalidSequences: false) == OperationStatus.Done)
        {
            buffer.Advance(written);
            return;
        }

        span[0] = 0xFF;
        var index = 1;
        foreach (var c in text)
        {
            span[index++] = (byte)c;
            span[index++] = (byte)(c >> 8);
        }

        buffer.Advance(index);
    }
}
