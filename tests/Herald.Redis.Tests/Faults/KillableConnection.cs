using StackExchange.Redis;

namespace Herald.Redis.Tests.Faults;

/// <summary>
/// A connection of this test's own, named so that <c>CLIENT KILL ID</c> cuts only its sockets (other tests share the
/// server), as a failover, a proxy restart or an idle timeout would. <see cref="Park"/> holds its interactive socket on
/// the server behind a <c>BLPOP</c> nobody answers, so the commands sent after it are written but unanswered until the
/// kill: the kill then fails them in flight, not applied.
/// </summary>
internal sealed class KillableConnection : IAsyncDisposable
{
    private readonly IConnectionMultiplexer _admin;
    private readonly string _name = "herald-kill-" + Guid.NewGuid().ToString("N");
    private readonly List<Task> _parked = [];

    private KillableConnection(IConnectionMultiplexer admin) => _admin = admin;

    public ConnectionMultiplexer Multiplexer { get; private set; } = null!;

    public static async Task<KillableConnection> ConnectAsync(IConnectionMultiplexer admin)
    {
        var connection = new KillableConnection(admin);
        connection.Multiplexer = await ConnectionMultiplexer.ConnectAsync($"{RedisFixture.Configuration},name={connection._name}");
        return connection;
    }

    /// <summary>Blocks the interactive socket on the server until <see cref="KillAsync"/>; commands sent meanwhile wait.</summary>
    public void Park()
    {
        var parked = Multiplexer.GetDatabase().ExecuteAsync("BLPOP", "herald-kill-park:" + _name, 0);
        lock (_parked)
        {
            _parked.Add(parked);
        }
    }

    /// <summary>Waits until the server holds a command unread behind the park (the one the kill is to cut in flight).</summary>
    public Task WaitUntilQueuedBehindParkAsync() =>
        Herald.Conformance.Eventually.UntilAsync(
            async () => (await MineAsync()).Any(line => line.Contains(" cmd=blpop ", StringComparison.Ordinal) && !line.Contains(" qbuf=0 ", StringComparison.Ordinal)),
            "a command waits on the server behind the park");

    /// <summary>Kills this connection's sockets (only theirs), and waits until the parked commands failed with them.</summary>
    public async Task KillAsync()
    {
        Task[] parked;
        lock (_parked)
        {
            parked = [.. _parked];
            _parked.Clear();
        }

        var list = await KillOnceAsync();
        await Task.WhenAny(Task.WhenAll(parked), Task.Delay(TimeSpan.FromSeconds(10)));
        foreach (var park in parked)
        {
            Assert.True(park.IsFaulted, "the parked command ended with the kill; clients were:\n" + list);
            Assert.IsType<RedisConnectionException>(park.Exception!.InnerException);
        }
    }

    private async Task<string> KillOnceAsync()
    {
        var mine = await CutAsync();
        Assert.NotEmpty(mine);
        return string.Join('\n', mine);
    }

    /// <summary>
    /// Kills whatever sockets of this connection the server holds now, without waiting for anything (none while the
    /// multiplexer is still reconnecting from an earlier cut); returns their <c>CLIENT LIST</c> lines.
    /// </summary>
    public async Task<List<string>> CutAsync()
    {
        var mine = await MineAsync();
        foreach (var line in mine)
        {
            // A socket that closed since the list was read is no error: it is cut already.
            await _admin.GetDatabase().ExecuteAsync("CLIENT", "KILL", "ID", line.Split(' ')[0]["id=".Length..], "SKIPME", "yes");
        }

        return mine;
    }

    private async Task<List<string>> MineAsync()
    {
        var list = (string?)await _admin.GetDatabase().ExecuteAsync("CLIENT", "LIST") ?? string.Empty;
        return [.. list.Split('\n').Where(line => line.Contains(" name=" + _name + " ", StringComparison.Ordinal))];
    }

    public async ValueTask DisposeAsync() => await Multiplexer.DisposeAsync();
}
