using System.Text;
using System.Text.Json;
using Herald.Streams.Topology;

namespace Herald.Streams;

/// <summary>
/// Maps a record's key to the partition that owns it: FNV-1a (32 bit) over the UTF-8 of the key's JSON, modulo the
/// partition count. Stable across processes and runtimes (unlike <see cref="string.GetHashCode()"/>), so every process
/// sharing a stream agrees on who owns a key. A windowed key belongs to the partition of its grouping key.
/// </summary>
internal static class StreamPartitioner
{
    private const uint OffsetBasis = 2166136261;
    private const uint Prime = 16777619;

    public static int PartitionOf(object? key, int partitions)
    {
        if (partitions == 1 || key is null)
        {
            return 0;
        }

        if (key is IWindowedKey windowed)
        {
            key = windowed.GroupKey;
        }

        var json = key is string s ? JsonSerializer.Serialize(s) : JsonSerializer.Serialize(key, StateCodec.Json);
        return (int)(Hash(Encoding.UTF8.GetBytes(json)) % (uint)partitions);
    }

    internal static uint Hash(ReadOnlySpan<byte> bytes)
    {
        var hash = OffsetBasis;
        foreach (var b in bytes)
        {
            hash = (hash ^ b) * Prime;
        }

        return hash;
    }
}
