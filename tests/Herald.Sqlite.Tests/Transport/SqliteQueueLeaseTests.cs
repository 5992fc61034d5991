using System.Collections.Concurrent;
using System.Text;
using Herald.Messages;
using Herald.Sqlite.Transport;
using Herald.Conformance;
using Herald.Conformance.Transport;
using Herald.Transport;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Time.Testing;

namespace Herald.Sqlite.Tests.Transport;

/// <summary>What a consumer does with what it prefetched when its lease renewals are late (another process holding the write lock).</summary>
public sealed class SqliteQueueLeaseTests : IDisposable
{
    private const int LeaseLostEvent = 1212;
    private const int RenewalFailedEvent = 1211;
    private const int NotStartedEvent = 1215;
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(15);
    private static readonly TimeSpan QuietWindow = TimeSpan.FromMilliseconds(300);
    private readonly TempDatabase _database = new();

    public void Dispose() => _database.Dispose();

    // Regression: the degraded-mode duplicate of the competing-processes test (buffered copies started after their lease ran out).
    [Fact]
    public async Task BufferedMessage_WhoseLeaseRenewalsAreLate_IsNotStarted_AndIsDeliveredAgainOnce()
    {
        var clock = new FakeTimeProvider(new DateTimeOffset(2030, 1, 1, 0, 0, 0, TimeSpan.Zero));
        var lease = TimeSpan.FromSeconds(3);
        var logs = new RecordingLoggerFactory();
        await using var transport = await SqliteQueueTransportFactory.OpenAsync(
            _database.Path,
            o =>
            {
                o.Synchronous = SqliteSynchronousMode.Normal;
                o.LeaseDuration = lease;
                o.PollInterval = TimeSpan.FromMilliseconds(100);

                // A renewal blocked by the test's lock fails after about a second (the provider retries in whole seconds).
                o.BusyTimeout = TimeSpan.FromMilliseconds(100);
            },
            clock,
            logs);
        var queue = "late-renewals";
        var sent = Enumerable.Range(0, 4).Select(NewEnvelope).ToList();
        foreach (var envelope in sent)
        {
            await transport.SendAsync(queue, envelope);
        }

        var firstStarted = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var releaseFirst = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var staleStarts = new ConcurrentBag<string>();
        var completed = new DeliveryCollector(clock);
        var options = new ConsumerOptions { MaxConcurrency = 1, Prefetch = 3 };
        await using var consumer = await transport.ConsumeAsync(queue, options, async (delivery, cancellationToken) =>
        {
            var id = delivery.Envelope.MessageId;
            if (id == sent[0].MessageId)
            {
                firstStarted.TrySetResult();
                await releaseFirst.Task.WaitAsync(cancellationToken);
            }
            else if (LeaseLeft(id, clock) < lease / 3)
            {
                staleStarts.Add($"{Sequence(delivery.Envelope)} with {LeaseLeft(id, clock)} of its lease left");
            }

            await delivery.AckAsync(cancellationToken);
            completed.Add(delivery);
        });

        // One claim took all four (sent before the consumer started); the other three wait in the buffer behind the first.
        await firstStarted.Task.WaitAsync(Timeout);
        using (var lockHolder = _database.OpenRaw())
        {
            Execute(lockHolder, "BEGIN IMMEDIATE");

            // Two renewal periods pass and the renewal cannot commit: a third of the claim's lease is left, less than is safe.
            clock.Advance((lease * 2 / 3) + TimeSpan.FromMilliseconds(100));
            await Eventually.UntilAsync(() => logs.Count(RenewalFailedEvent) > 0, "the renewal failed on the held write lock", Timeout);
            Execute(lockHolder, "ROLLBACK");
        }

        releaseFirst.TrySetResult();

        await completed.WaitForMessagesAsync([.. sent.Select(e => e.MessageId)], Timeout, "every message completed");
        await completed.AssertNoMoreThanAsync(sent.Count, QuietWindow, "a message was completed twice");
        Assert.True(staleStarts.IsEmpty, $"Started under a stale lease: {string.Join(", ", staleStarts)}.");
        Assert.Equal(sent.Select(e => e.MessageId).Order(), completed.Items.Select(d => d.Envelope.MessageId).Order());
        Assert.Equal(3, logs.Count(NotStartedEvent));
        Assert.Equal(0, logs.Count(LeaseLostEvent));
        Assert.Equal(0L, _database.Scalar("SELECT COUNT(*) FROM herald_queue_messages"));
    }

    private TimeSpan LeaseLeft(Guid messageId, TimeProvider clock)
    {
        var until = _database.Scalar($"SELECT lease_until FROM herald_queue_messages WHERE message_id = X'{Convert.ToHexString(messageId.ToByteArray(bigEndian: true))}'");
        return until is long ticks ? TimeSpan.FromTicks(ticks - clock.GetUtcNow().UtcTicks) : TimeSpan.Zero;
    }

    private static void Execute(Microsoft.Data.Sqlite.SqliteConnection connection, string sql)
    {
        using var command = connection.CreateCommand();
        command.CommandText = sql;
        command.ExecuteNonQuery();
    }

    private static string Sequence(Envelope envelope) => $"message {envelope.Headers[TransportConformance.SequenceHeader]}";

    private static Envelope NewEnvelope(int sequence) => new()
    {
        MessageId = Guid.CreateVersion7(),
        MessageType = "queue-test",
        Time = DateTimeOffset.UtcNow,
        Headers = new Dictionary<string, string>(StringComparer.Ordinal) { [TransportConformance.SequenceHeader] = sequence.ToString(System.Globalization.CultureInfo.InvariantCulture) },
        Body = Encoding.UTF8.GetBytes($"{{\"seq\":{sequence}}}"),
    };

    /// <summary>Counts the log events of every logger it creates, by event id.</summary>
    private sealed class RecordingLoggerFactory : ILoggerFactory
    {
        private readonly ConcurrentDictionary<int, int> _events = new();

        public int Count(int eventId) => _events.TryGetValue(eventId, out var count) ? count : 0;

        public ILogger CreateLogger(string categoryName) => new Logger(this);

        public void AddProvider(ILoggerProvider provider)
        {
        }

        public void Dispose()
        {
        }

        private sealed class Logger(RecordingLoggerFactory factory) : ILogger
        {
            public IDisposable? BeginScope<TState>(TState state)
                where TState : notnull => null;

            public bool IsEnabled(LogLevel logLevel) => true;

            public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter) =>
                factory._events.AddOrUpdate(eventId.Id, 1, static (_, count) => count + 1);
        }
    }
}
