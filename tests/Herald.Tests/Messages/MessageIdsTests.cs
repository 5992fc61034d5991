using Herald.Messages;

namespace Herald.Tests.Messages;

public sealed class MessageIdsTests
{
    [Fact]
    public void NewId_IsAVersion7GuidCarryingTheMillisecondTime()
    {
        var time = new DateTimeOffset(2030, 5, 6, 7, 8, 9, 123, TimeSpan.Zero);
        var id = MessageIds.NewId(time);

        Assert.Equal(7, id.Version);
        Assert.Equal(0b10, id.Variant >> 2);
        var bytes = id.ToByteArray(bigEndian: true);
        var milliseconds = ((long)bytes[0] << 40) | ((long)bytes[1] << 32) | ((long)bytes[2] << 24) | ((long)bytes[3] << 16) | ((long)bytes[4] << 8) | bytes[5];
        Assert.Equal(time.ToUnixTimeMilliseconds(), milliseconds);
    }

    [Fact]
    public void NewId_SortsByTimeAndDoesNotRepeat()
    {
        var start = new DateTimeOffset(2030, 1, 1, 0, 0, 0, TimeSpan.Zero);
        var ids = Enumerable.Range(0, 10_000).Select(i => MessageIds.NewId(start.AddMilliseconds(i / 10))).ToList();

        Assert.Equal(ids.Count, ids.Distinct().Count());
        for (var i = 10; i < ids.Count; i += 10)
        {
            Assert.True(string.CompareOrdinal(ids[i - 10].ToString(), ids[i].ToString()) < 0, $"id {i} sorts after id {i - 10}");
        }

        Assert.True(string.CompareOrdinal(ids[0].ToString(), ids[^1].ToString()) < 0);
    }
}
