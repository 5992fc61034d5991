using System.Text;
using Herald.Messages;
using Herald.Reliability.Outbox;
using Herald.Sqlite;
using Herald.Sqlite.Reliability;

// Usage: Herald.Sqlite.CrashChild <database file> <message count>
// Commits <count> outbox messages in one unit of work, prints "committed <ids>", then adds as many to a second unit of work
// that never commits, prints "uncommitted <ids>" and blocks: nothing here ever sends. The test kills it with SIGKILL.
if (args.Length != 2 || !int.TryParse(args[1], out var count) || count < 1)
{
    await Console.Error.WriteLineAsync("usage: Herald.Sqlite.CrashChild <database file> <message count>");
    return 2;
}

var store = await SqliteEventStore.OpenAsync(args[0]);
var outbox = new SqliteOutboxStore(store);

var committed = NewMessages(count);
var unitOfWork = store.BeginUnitOfWork();
await outbox.AddAsync(committed, unitOfWork);
await unitOfWork.CommitAsync();
Console.WriteLine("committed " + string.Join(',', committed.Select(m => m.Id)));

var uncommitted = NewMessages(count);
var open = store.BeginUnitOfWork();
await outbox.AddAsync(uncommitted, open);
Console.WriteLine("uncommitted " + string.Join(',', uncommitted.Select(m => m.Id)));

// Block before any send until killed.
await Task.Delay(Timeout.Infinite);
return 0;

static OutboxMessage[] NewMessages(int count) =>
    [.. Enumerable.Range(0, count).Select(i =>
    {
        var now = DateTimeOffset.UtcNow;
        var id = Guid.CreateVersion7(now);

        // The envelope carries the row's id, so the test can tell which rows were sent.
        return new OutboxMessage
        {
            Id = id,
            DestinationKind = OutboxDestinationKind.Queue,
            Destination = "crash-queue",
            CreatedAt = now,
            Envelope = new Envelope
            {
                MessageId = id,
                MessageType = "crash-test",
                Time = now,
                Body = Encoding.UTF8.GetBytes($"{{\"n\":{i}}}"),
            },
        };
    })];
