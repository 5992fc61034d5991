using System.Buffers.Binary;

namespace Herald.Messages;

/// <summary>
/// Creates message ids: RFC 9562 version 7 Guids (48-bit Unix milliseconds, then 74 random bits), so ids sort by creation
/// time. The random bits come from <see cref="Random.Shared"/>: ids must be unique, not unguessable, and the runtime's
/// <see cref="Guid.CreateVersion7(DateTimeOffset)"/> reads the OS random source on every call, which dominated publishing.
/// </summary>
internal static class MessageIds
{
    /// <summary>A new version 7 id for the given time.</summary>
    public static Guid NewId(DateTimeOffset time)
    {
        Span<byte> bytes = stackalloc byte[16];
        Random.Shared.NextBytes(bytes[6..]);
        var milliseconds = (ulong)time.ToUnixTimeMilliseconds();
        BinaryPrimitives.WriteUInt64BigEndian(bytes, milliseconds << 16 | BinaryPrimitives.ReadUInt16BigEndian(bytes[6..]));
        bytes[6] = (byte)(0x70 | (bytes[6] & 0x0F));
        bytes[8] = (byte)(0x80 | (bytes[8] & 0x3F));
        return new Guid(bytes, bigEndian: true);
    }
}
