using Herald.Sqlite.EventSourcing;
using System.Text;
using Herald.Messages;
using Herald.Sqlite.Transport;
using Herald.Conformance.Transport;
using Herald.Transport;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Time.Testing;

namespace Herald.Sqlite.Tests.Transport;

/// <summary>What only the SQLite queue has to show (issue 5): its file survives restarts and crashes, two processes share a queue, dead letters are kept.</summary>
public sealed class SqliteQueueTransportTests : IDisposable
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(15);
    private static readonly TimeSpan QuietWindow = TimeSpan.FromMilliseconds(300);
    private readonly TempDatabase _database = new();

    public void Dispose() => _database.Dispose();

    [Fact]
    public async Task Messages_SurviveDisposeAndReopen_AndAreDeliveredOnceThere()
    {
        var queue = "survivors";
        var sent = Enumerable.Range(0, 20).Select(NewEnvelope).ToList();
        await using (var first = await OpenAsync())
        {
            foreach (var envelope in sent)
            {
                await first.SendAsync(queue, envelope);
            }
        }

        await using var reopened = await OpenAsync();
        var collector = new DeliveryCollector();
        await using var consumer = await reopened.ConsumeAsync(queue, ConsumerOptions.Default, (d, _) => Collect(collector, d));

        await collector.WaitForMessagesAsync([.. sent.Select(e => e.MessageId)], Timeout, "the messages sent before the reopen");
        await collector.AssertNoMoreThanAsync(sent.Count, QuietWindow, "a message came twice");
        Assert.Equal(sent.Select(e => e.MessageId), collector.Items.Select(d => d.Envelope.MessageId));
        Assert.All(collector.Items, d => Assert.Equal(1, d.Envelope.DeliveryAttempt));
    }

    [Fact]
    public async Task Crash_WithoutAcking_TheLeaseRunsOut_AndANewInstanceGetsTheMessageAgain()
    {
        var queue = "crash";
        var sent = NewEnvelope(1);
        var lease = TimeSpan.FromMilliseconds(600);

        // The dying instance writes through a store the test closes under it, as a killed process's file would close.
        var file = await SqliteEventStore.OpenAsync(_database.Path, o => o.Synchronous = SqliteSynchronousMode.Normal);
        var crashed = SqliteQueueTransportFactory.Open(file, o =>
        {
            o.LeaseDuration = lease;
            o.PollInterval = TimeSpan.FromMilliseconds(100);
        });
        var started = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await crashed.SendAsync(queue, sent);
        await crashed.ConsumeAsync(queue, ConsumerOptions.Default, async (_, cancellationToken) =>
        {
            started.TrySetResult();
            await Task.Delay(System.Threading.Timeout.InfiniteTimeSpan, cancellationToken);
        });
        await started.Task.WaitAsync(Timeout);
        var crashedAt = TimeProvider.System.GetTimestamp();
        await CrashAsync(file, crashed);

        await using var next = await OpenAsync(o => o.LeaseDuration = lease);
        var collector = new DeliveryCollector();
        await using var consumer = await next.ConsumeAsync(queue, ConsumerOptions.Default, (d, _) => Collect(collector, d));
        var again = (await collector.WaitForMessagesAsync([sent.MessageId], Timeout, "the message the crashed instance held"))[0];

        Assert.True(TimeProvider.System.GetElapsedTime(crashedAt) >= lease - TimeSpan.FromMilliseconds(50), "It must wait for the lease to run out.");
        Assert.Equal(2, again.Envelope.DeliveryAttempt);
        Assert.Equal(sent.Body.ToArray(), again.Envelope.Body.ToArray());
    }

    [Fact]
    public async Task TwoInstances_CompetingOnOneQueue_NeverBothCompleteTheSameMessage()
    {
        const int count = 300;
        var queue = "competing";
        await using var a = await OpenAsync(o => o.PollInterval = TimeSpan.FromMilliseconds(50));
        await using var b = await OpenAsync(o => o.PollInterval = TimeSpan.FromMilliseconds(50));
        var completed = new DeliveryCollector();
        var options = new ConsumerOptions { MaxConcurrency = 2, Prefetch = 8 };
        async ValueTask HandleAsync(Delivery delivery, string who, CancellationToken cancellationToken)
        {
            await Task.Yield();
            await delivery.AckAsync(cancellationToken);
            completed.Add(delivery, who);
        }

        await using var fromA = await a.ConsumeAsync(queue, options, (d, ct) => HandleAsync(d, "a", ct));
        await using var fromB = await b.ConsumeAsync(queue, options, (d, ct) => HandleAsync(d, "b", ct));
        var sent = Enumerable.Range(0, count).Select(NewEnvelope).ToList();
        await Task.WhenAll(
            Task.Run(async () => { foreach (var e in sent.Where((_, i) => i % 2 == 0)) { await a.SendAsync(queue, e); } }),
            Task.Run(async () => { foreach (var e in sent.Where((_, i) => i % 2 == 1)) { await b.SendAsync(queue, e); } }));

        await completed.WaitForMessagesAsync([.. sent.Select(e => e.MessageId)], Timeout * 2, "every message completed");
        await completed.AssertNoMoreThanAsync(count, QuietWindow, "a message was completed twice");
        var twice = completed.Items.GroupBy(d => d.Envelope.MessageId).Count(g => g.Count() > 1);
        Assert.True(twice == 0, $"{twice} messages were completed by both instances. {completed.Describe()}");
        Assert.Contains(completed.Items, d => d.Consumer == "a");
        Assert.Contains(completed.Items, d => d.Consumer == "b");
        Assert.Equal(0L, _database.Scalar("SELECT COUNT(*) FROM herald_queue_messages"));
    }

    [Fact]
    public async Task Delays_AreHonouredAcrossAReopen()
    {
        var clock = new FakeTimeProvider(new DateTimeOffset(2030, 1, 1, 0, 0, 0, TimeSpan.Zero));
        var queue = "delayed";
        var delay = TimeSpan.FromHours(1);
        var later = NewEnvelope(1);
        var now = NewEnvelope(2);
        await using (var first = await OpenAsync(clock: clock))
        {
            await first.SendAsync(queue, later, new SendOptions { Delay = delay });
            await first.SendAsync(queue, now);
        }

        await using var reopened = await OpenAsync(clock: clock);
        var collector = new DeliveryCollector(clock);
        await using var consumer = await reopened.ConsumeAsync(queue, ConsumerOptions.Default, (d, _) => Collect(collector, d));
        await collector.WaitForMessagesAsync([now.MessageId], Timeout, "the undelayed message");

        clock.Advance(delay - TimeSpan.FromMilliseconds(1));
        await collector.AssertNoMoreThanAsync(1, QuietWindow, "the delayed message came before its time");
        clock.Advance(TimeSpan.FromMilliseconds(1));
        var got = (await collector.WaitForMessagesAsync([later.MessageId], Timeout, "the delayed message once due"))[1];
        Assert.Equal(new DateTimeOffset(2030, 1, 1, 1, 0, 0, TimeSpan.Zero), got.ReceivedAt);
    }

    [Fact]
    public async Task Send_OverTheSizeLimit_IsRefusedBeforeAnythingIsWritten()
    {
        await using var transport = await OpenAsync(o => o.MaxMessageBytes = 1000);
        await transport.BindAsync("big-topic", "big");
        var tooLarge = NewEnvelope(1) with { Body = new byte[1001] };

        var error = await Assert.ThrowsAsync<MessageTooLargeException>(async () => await transport.SendAsync("big", tooLarge));
        await Assert.ThrowsAsync<MessageTooLargeException>(async () => await transport.PublishAsync("big-topic", tooLarge));

        Assert.Equal((1001, 1000), (error.Bytes, error.Limit));
        Assert.Equal(1000, transport.Capabilities.MaxMessageBytes);
        Assert.Equal(0L, _database.Scalar("SELECT COUNT(*) FROM herald_queue_messages"));
    }

    [Fact]
    public async Task DeadLetters_AreKeptInTheFile_WithTheReason_AndListedAfterAReopen()
    {
        var queue = "poison";
        var sent = NewEnvelope(7) with { PartitionKey = "key-1", CorrelationId = "flow-1" };
        await using (var transport = await OpenAsync())
        {
            var collector = new DeliveryCollector();
            await using var consumer = await transport.ConsumeAsync(queue, ConsumerOptions.Default, async (delivery, cancellationToken) =>
            {
                if (delivery.Envelope.DeliveryAttempt == 1)
                {
                    await delivery.NackAsync(TimeSpan.Zero, cancellationToken);
                }
                else
                {
                    await delivery.DeadLetterAsync("poison: cannot decode", cancellationToken);
                }

                collector.Add(delivery);
            });
            await transport.SendAsync(queue, sent);
            await collector.WaitForCountAsync(2, Timeout, "the delivery and its redelivery");
        }

        await using var reopened = (SqliteQueueTransport)await OpenAsync();
        var deadLetters = await reopened.ReadDeadLettersAsync(queue, 10);

        var deadLetter = Assert.Single(deadLetters);
        Assert.Equal("poison: cannot decode", deadLetter.Reason);
        Assert.Equal(queue, deadLetter.Queue);
        Assert.Equal(sent.MessageId, deadLetter.Envelope.MessageId);
        Assert.Equal(("key-1", "flow-1", 2), (deadLetter.Envelope.PartitionKey, deadLetter.Envelope.CorrelationId, deadLetter.Envelope.DeliveryAttempt));
        Assert.Equal(sent.Headers, deadLetter.Envelope.Headers);
        Assert.Equal(0L, _database.Scalar("SELECT COUNT(*) FROM herald_queue_messages"));
    }

    [Fact]
    public async Task AHandlerRunningLongerThanTheLease_KeepsItsMessage_BecauseTheLeaseIsRenewed()
    {
        var queue = "long-handler";
        // Renewed every third of it: long enough that a loaded 2-core runner (other test classes start child processes)
        // never stalls a renewal past the lease, short enough to run out several times over the window below.
        var lease = TimeSpan.FromSeconds(1);
        await using var a = await OpenAsync(o => o.LeaseDuration = lease);
        await using var b = await OpenAsync(o => { o.LeaseDuration = lease; o.PollInterval = TimeSpan.FromMilliseconds(50); });
        var seen = new DeliveryCollector();
        var started = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await using var slow = await a.ConsumeAsync(queue, ConsumerOptions.Default, async (d, ct) =>
        {
            seen.Add(d, "a");
            started.TrySetResult();
            await release.Task.WaitAsync(ct);
        });
        await a.SendAsync(queue, NewEnvelope(1));
        await started.Task.WaitAsync(Timeout);
        await using var other = await b.ConsumeAsync(queue, ConsumerOptions.Default, (d, _) => Collect(seen, d, "b"));

        // Three lease lengths: without renewal the other instance would take the message.
        await seen.AssertNoMoreThanAsync(1, lease * 3, "the message was taken from a running handler");
        release.TrySetResult();
    }

    [Fact]
    public async Task UseSqliteQueue_OnTheEventStoresFile_SharesItsWriter_AndReplacesTheTransport()
    {
        var builder = Host.CreateApplicationBuilder();
        builder.Services.AddHerald(h => h.Configure(o => o.StartConsumer = false).UseSqlite(_database.Path).UseSqliteQueue(_database.Path));
        using var host = builder.Build();
        await host.StartAsync();
        var transport = Assert.IsType<SqliteQueueTransport>(host.Services.GetRequiredService<ITransport>());
        var store = host.Services.GetRequiredService<SqliteEventStore>();
        var before = store.WriterStatistics.Writes;

        var collector = new DeliveryCollector();
        await using (var consumer = await transport.ConsumeAsync("hosted", ConsumerOptions.Default, (d, _) => Collect(collector, d)))
        {
            var sent = NewEnvelope(1);
            await transport.SendAsync("hosted", sent);
            await collector.WaitForMessagesAsync([sent.MessageId], Timeout, "the message");
        }

        Assert.True(transport.SharesWriter);
        Assert.True(store.WriterStatistics.Writes > before, "The queue's writes must go through the store's writer.");
        await host.StopAsync();
    }

    [Fact]
    public async Task Nack_WithHeaders_TheRowKeepsThem_SoTheNextDeliveryCarriesThem()
    {
        await using var transport = await OpenAsync();
        var queue = "carry";
        var sent = NewEnvelope(1);
        await transport.SendAsync(queue, sent);
        var deliveries = new System.Collections.Concurrent.ConcurrentQueue<Envelope>();
        await using var consumer = await transport.ConsumeAsync(queue, ConsumerOptions.Default, async (delivery, ct) =>
        {
            deliveries.Enqueue(delivery.Envelope);
            if (delivery.Envelope.DeliveryAttempt == 1)
            {
                await delivery.NackAsync(TimeSpan.Zero, new Dictionary<string, string> { [HeaderNames.FirstFailure] = "2030-01-02T03:00:00.0000000+00:00" }, ct);
            }
        });

        await Herald.Conformance.Eventually.UntilAsync(() => deliveries.Count >= 2, "the nacked message came back");
        var again = deliveries.Skip(1).First();
        Assert.Equal("2030-01-02T03:00:00.0000000+00:00", again.GetHeader(HeaderNames.FirstFailure));
        Assert.Equal(sent.GetHeader(TransportConformance.SequenceHeader), again.GetHeader(TransportConformance.SequenceHeader));
        Assert.Equal(2, again.DeliveryAttempt);
    }

    private async Task<ITransport> OpenAsync(Action<SqliteQueueOptions>? configure = null, TimeProvider? clock = null) =>
        await SqliteQueueTransportFactory.OpenAsync(_database.Path, o =>
        {
            o.Synchronous = SqliteSynchronousMode.Normal;
            o.PollInterval = TimeSpan.FromMilliseconds(100);
            configure?.Invoke(o);
        }, clock);

    /// <summary>
    /// Stops an instance as a killed process would: its file closes first, so nothing it held is settled or handed back (its
    /// renewals and hand-backs fail) and the messages come back only when their leases run out.
    /// </summary>
    private static async Task CrashAsync(SqliteEventStore file, ITransport transport)
    {
        await file.DisposeAsync();
        await transport.DisposeAsync();
    }

    private static ValueTask Collect(DeliveryCollector collector, Delivery delivery, string consumer = "")
    {
        collector.Add(delivery, consumer);
        return ValueTask.CompletedTask;
    }

    private static Envelope NewEnvelope(int sequence) => new()
    {
        MessageId = Guid.CreateVersion7(),
        MessageType = "queue-test",
        Time = DateTimeOffset.UtcNow,
        Headers = new Dictionary<string, string>(StringComparer.Ordinal) { [TransportConformance.SequenceHeader] = sequence.ToString(System.Globalization.CultureInfo.InvariantCulture) },
        Body = Encoding.UTF8.GetBytes($"{{\"seq\":{sequence}}}"),
    };
}
