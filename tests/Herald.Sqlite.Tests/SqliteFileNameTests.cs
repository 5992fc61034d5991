using Herald.EventSourcing;
using Herald.Messages;
using Herald.Sqlite.EventSourcing;
using Herald.Sqlite.Transport;
using Herald.Transport;
using Microsoft.Data.Sqlite;

namespace Herald.Sqlite.Tests;

/// <summary>Files whose path a plain path string cannot carry ('=' needs a connection string): every part of the package opens them.</summary>
public sealed class SqliteFileNameTests : IDisposable
{
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(20);
    private readonly string _directory = Path.Combine(Path.GetTempPath(), $"herald-sqlite-a=b; c-{Guid.NewGuid():N}");

    public SqliteFileNameTests() => Directory.CreateDirectory(_directory);

    public void Dispose() => Directory.Delete(_directory, recursive: true);

    [Fact]
    public async Task QueueOnAStore_WhosePathHasAnEqualsSign_OpensOnTheStoresFile()
    {
        var path = Path.Combine(_directory, "herald.db");
        await using var store = await SqliteEventStore.OpenAsync($"Data Source=\"{path}\"");
        await store.AppendAsync("order-1", ExpectedVersion.NoStream, [NewMessage()]);

        var transport = SqliteQueueTransportFactory.Open(store, o => o.PollInterval = TimeSpan.FromMilliseconds(50));
        try
        {
            var sent = NewMessage();
            var received = new TaskCompletionSource<Guid>(TaskCreationOptions.RunContinuationsAsynchronously);
            await transport.SendAsync("orders", sent);
            await transport.ConsumeAsync("orders", ConsumerOptions.Default, (message, _) =>
            {
                received.TrySetResult(message.Envelope.MessageId);
                return ValueTask.CompletedTask;
            });

            Assert.Equal(sent.MessageId, await received.Task.WaitAsync(Deadline));
            Assert.True(File.Exists(path));
        }
        finally
        {
            await transport.DisposeAsync();
        }
    }

    [Fact]
    public async Task Open_InAFolderThatDoesNotExist_FailsNamingTheFileAndTheMissingFolder()
    {
        var folder = Path.Combine(_directory, "not-made-yet");
        var path = Path.Combine(folder, "herald.db");

        var opening = await Assert.ThrowsAsync<SqliteException>(() => SqliteEventStore.OpenAsync($"Data Source=\"{path}\""));

        Assert.Equal(14, opening.SqliteErrorCode); // SQLITE_CANTOPEN, as before
        Assert.Contains(path, opening.Message, StringComparison.Ordinal);
        Assert.Contains($"folder '{folder}' does not exist", opening.Message, StringComparison.Ordinal);
        Assert.False(Directory.Exists(folder));
    }

    private static Envelope NewMessage() => new()
    {
        MessageId = Guid.CreateVersion7(),
        MessageType = "order-placed",
        Time = new DateTimeOffset(2026, 3, 4, 5, 6, 7, TimeSpan.Zero),
        Body = "{}"u8.ToArray(),
    };
}
