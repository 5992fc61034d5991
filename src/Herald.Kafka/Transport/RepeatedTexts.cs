using System.Text;

namespace Herald.Kafka.Transport;

/// <summary>
/// The texts that records repeat in their headers (the message type, the source, the content type), each kept with its
/// UTF-8 bytes, so decoding one hands out the string made the first time instead of a new one per record. Holds a few;
/// past that, the oldest entry gives way. For one thread: a consumer's poll thread.
/// </summary>
internal sealed class RepeatedTexts
{
    private const int Capacity = 16;

    // Longer values are rarely repeated ones; they are decoded each time rather than held.
    private const int MaxBytes = 128;

    private readonly byte[][] _bytes = new byte[Capacity][];
    private readonly string[] _texts = new string[Capacity];
    private int _count;
    private int _next;

    /// <summary>The text of <paramref name="utf8"/>, which the caller checked is valid UTF-8.</summary>
    public string Get(byte[] utf8)
    {
        var span = utf8.AsSpan();
        for (var i = 0; i < _count; i++)
        {
            if (span.SequenceEqual(_bytes[i]))
            {
                return _texts[i];
            }
        }

        var text = Encoding.UTF8.GetString(utf8);
        if (utf8.Length <= MaxBytes)
        {
            // A copy: the record's own array goes out with its delivery.
            _bytes[_next] = utf8.ToArray();
            _texts[_next] = text;
            _next = (_next + 1) % Capacity;
            _count = Math.Max(_count, _next == 0 ? Capacity : _next);
        }

        return text;
    }
}
