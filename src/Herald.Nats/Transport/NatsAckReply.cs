using System.Globalization;

namespace Herald.Nats.Transport;

/// <summary>
/// What a consumer needs of a JetStream message's metadata, read from its ack subject
/// (<c>$JS.ACK.[domain.account.]stream.consumer.delivered.streamSeq.consumerSeq.timestampNs.pending[.token]</c>, ADR-15)
/// without allocating: NATS.Net's <c>Metadata</c> splits that subject into a string per token on every message, which
/// was most of what the consume path allocated beyond the raw client.
/// </summary>
internal readonly record struct NatsAckReply(ulong Delivered, ulong StreamSequence, ulong Pending, DateTimeOffset Timestamp)
{
    private const int V1Tokens = 9;
    private const int V2Tokens = 12;

    /// <summary>Reads the ack subject; false when it is not one (then the caller falls back to the client's parse).</summary>
    public static bool TryParse(string? reply, out NatsAckReply parsed)
    {
        parsed = default;
        if (reply is null || !reply.StartsWith("$JS.ACK.", StringComparison.Ordinal))
        {
            return false;
        }

        Span<Range> tokens = stackalloc Range[V2Tokens + 1];
        var span = reply.AsSpan();
        var count = span.Split(tokens, '.');

        // The older form has no domain and account hash: its tokens from the stream on sit two places earlier.
        int shift;
        if (count == V1Tokens)
        {
            shift = -2;
        }
        else if (count is V2Tokens - 1 or V2Tokens)
        {
            shift = 0;
        }
        else
        {
            return false;
        }

        if (!Number(span[tokens[6 + shift]], out var delivered)
            || !Number(span[tokens[7 + shift]], out var streamSequence)
            || !Number(span[tokens[9 + shift]], out var nanoseconds)
            || !Number(span[tokens[10 + shift]], out var pending)
            || nanoseconds / 1_000_000 > (ulong)DateTimeOffset.MaxValue.ToUnixTimeMilliseconds())
        {
            return false;
        }

        // Milliseconds, as NATS.Net reads it, so a time read either way is the same.
        parsed = new NatsAckReply(delivered, streamSequence, pending, DateTimeOffset.FromUnixTimeMilliseconds((long)(nanoseconds / 1_000_000)));
        return true;
    }

    private static bool Number(ReadOnlySpan<char> text, out ulong value) =>
        ulong.TryParse(text, NumberStyles.None, CultureInfo.InvariantCulture, out value);
}
