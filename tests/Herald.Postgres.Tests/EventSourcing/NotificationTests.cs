using Herald.EventSourcing;
using Herald.EventSourcing.Subscriptions;
using Herald.Postgres.EventSourcing;
using Herald.Conformance;
using Npgsql;

namespace Herald.Postgres.Tests.EventSourcing;

public sealed class NotificationTests(PostgresSchemaFixture fixture) : IClassFixture<PostgresSchemaFixture>
{
    private static readonly TimeSpan Timeout = TimeSpan.FromSeconds(20);

    // Far beyond the test's timeout: a wake-up can only come from a notification.
    private static readonly TimeSpan NoFallback = TimeSpan.FromHours(1);

    [Fact]
    public async Task ListenConnectionTerminated_ReconnectsAndASubscriptionWakesOnTheNextAppendFromAnotherNode()
    {
        await using var otherSource = NpgsqlDataSource.Create(PostgresTestDatabase.ConnectionString);
        await using var follower = await PostgresEventStore.CreateAsync(fixture.DataSource, new PostgresStoreOptions
        {
            Schema = fixture.Schema,
            ListenerReconnectDelay = TimeSpan.FromMilliseconds(20),
            NotificationFallbackInterval = NoFallback,
        });
        await using var writer = await PostgresEventStore.CreateAsync(otherSource, new PostgresStoreOptions { Schema = fixture.Schema });
        var category = TestEvents.NewCategory();
        var seen = new List<RecordedEvent>();
        await using var subscription = await EventSubscription.StartNewAsync(follower, follower, (e, _) =>
        {
            lock (seen)
            {
                seen.Add(e);
            }

            return ValueTask.CompletedTask;
        }, new EventSubscriptionOptions { SubscriptionId = TestEvents.NewCategory(), StartAfterPosition = await follower.GetLastPositionAsync(), Filter = EventFilter.ForCategory(category) });

        var before = await writer.AppendAsync(TestEvents.NewStream(category), ExpectedVersion.NoStream, TestEvents.Many(1));
        await subscription.WaitForPositionAsync(before.LastPosition).WaitAsync(Timeout);
        await Eventually.UntilAsync(() => follower.Listener is { IsListening: true }, "the follower to listen");
        var listener = follower.Listener!;
        var connects = listener.Connects;

        await PostgresTestDatabase.ExecuteAsync($"SELECT pg_terminate_backend({listener.ProcessId})");
        await Eventually.UntilAsync(() => listener.Connects > connects && listener.IsListening, "the notification connection to come back");

        var after = await writer.AppendAsync(TestEvents.NewStream(category), ExpectedVersion.NoStream, TestEvents.Many(2));
        await subscription.WaitForPositionAsync(after.LastPosition).WaitAsync(Timeout);
        lock (seen)
        {
            Assert.Equal(3, seen.Count);
            Assert.Equal(seen.Select(e => e.Position).Order(), seen.Select(e => e.Position));
        }
    }

    [Fact]
    public async Task WaitForEvents_IsWokenByANotificationFromAnotherNode()
    {
        await using var otherSource = NpgsqlDataSource.Create(PostgresTestDatabase.ConnectionString);
        await using var follower = await PostgresEventStore.CreateAsync(fixture.DataSource, new PostgresStoreOptions { Schema = fixture.Schema, NotificationFallbackInterval = NoFallback });
        await using var writer = await PostgresEventStore.CreateAsync(otherSource, new PostgresStoreOptions { Schema = fixture.Schema });
        var head = await follower.GetLastPositionAsync();
        var waiting = follower.WaitForEventsAsync(head).AsTask();
        await Eventually.UntilAsync(() => follower.Listener is { IsListening: true }, "the follower to listen");

        var result = await writer.AppendAsync(TestEvents.NewStream(), ExpectedVersion.NoStream, TestEvents.Many(1));

        await waiting.WaitAsync(Timeout);
        Assert.True(await follower.GetLastPositionAsync() >= result.LastPosition);
    }

    [Fact]
    public async Task AppendsWithinTheNotifyInterval_ShareANotify_AndTheLastIsNotifiedAfterItCommits()
    {
        var interval = TimeSpan.FromSeconds(5);
        // Appends to this class's schema only come from this test while it runs (the class's tests run one at a time).
        var channel = Herald.Postgres.Schema.Migrations.ChannelFor(fixture.Schema);
        await using var listening = await fixture.DataSource.OpenConnectionAsync();
        var notifications = 0;
        listening.Notification += (_, _) => Interlocked.Increment(ref notifications);
        using var stop = new CancellationTokenSource();
        var pump = await ListenAsync(listening, channel, stop.Token);

        await using var otherSource = NpgsqlDataSource.Create(PostgresTestDatabase.ConnectionString);
        await using var follower = await PostgresEventStore.CreateAsync(fixture.DataSource, new PostgresStoreOptions { Schema = fixture.Schema, NotificationFallbackInterval = NoFallback });
        await using var writer = await PostgresEventStore.CreateAsync(otherSource, new PostgresStoreOptions
        {
            Schema = fixture.Schema,
            AppendNotifyInterval = interval,
        });
        var first = await writer.AppendAsync(TestEvents.NewStream(), ExpectedVersion.NoStream, TestEvents.Many(1));
        await Eventually.UntilAsync(() => Volatile.Read(ref notifications) >= 1, "the first append's NOTIFY");
        var waiting = follower.WaitForEventsAsync(first.LastPosition).AsTask();
        await Eventually.UntilAsync(() => follower.Listener is { IsListening: true }, "the follower to listen");

        // The first append took the NOTIFY, so the next ones, within the interval, go without one of their own.
        const int Appends = 10;
        var burst = System.Diagnostics.Stopwatch.StartNew();
        AppendResult last = first;
        for (var i = 1; i < Appends; i++)
        {
            last = await writer.AppendAsync(TestEvents.NewStream(), ExpectedVersion.NoStream, TestEvents.Many(1));
        }

        var before = Volatile.Read(ref notifications);
        var withinInterval = burst.Elapsed < interval;

        // Nothing else appends: only the NOTIFY the deferred appends owe (or, on a machine slow enough that the burst outlasted
        // the interval, one a later append took) wakes the follower and counts here.
        await waiting.WaitAsync(Timeout);
        if (withinInterval)
        {
            await Eventually.UntilAsync(() => Volatile.Read(ref notifications) > before, "the NOTIFY owed after the last append", Timeout);
        }

        Assert.True(await follower.GetLastPositionAsync() >= last.LastPosition);
        Assert.True(Volatile.Read(ref notifications) < Appends, $"{notifications} NOTIFYs for {Appends} appends");
        await stop.CancelAsync();
        await pump;
    }

    /// <summary>
    /// A time setting too long to wait on (or to add to the time of day) passed validation and threw where a reader waited:
    /// the recheck intervals in a waiting reader's Task.Delay, ReadOwnAppendsTimeout in its deadline's date sum.
    /// </summary>
    [Theory]
    [InlineData(nameof(PostgresStoreOptions.HorizonRecheckInterval))]
    [InlineData(nameof(PostgresStoreOptions.NotificationFallbackInterval))]
    [InlineData(nameof(PostgresStoreOptions.ReadOwnAppendsTimeout))]
    public async Task ATimeSettingTooLongToWaitOrAddToADate_FailsTheStoreCreationNamingIt(string setting)
    {
        var options = new PostgresStoreOptions { Schema = fixture.Schema, ListenerReconnectDelay = TimeSpan.MaxValue };
        typeof(PostgresStoreOptions).GetProperty(setting)!.SetValue(options, TimeSpan.MaxValue);

        var refused = await Assert.ThrowsAsync<ArgumentException>(async () => await PostgresEventStore.CreateAsync(fixture.DataSource, options));
        Assert.Equal(setting, refused.ParamName);
    }

    [Fact]
    public async Task AListener_WithAFirstReconnectDelayPastItsCap_KeepsReconnecting_AndDisposesCleanly()
    {
        // ListenerReconnectDelay only had to be positive: TimeSpan.MaxValue made the first wait after a failure throw, so
        // the listener stopped for good (consumers and readers polling from then on) and its DisposeAsync threw.
        var time = new Microsoft.Extensions.Time.Testing.FakeTimeProvider();
        await using var unreachable = NpgsqlDataSource.Create("Host=127.0.0.1;Port=1;Username=herald;Password=herald;Timeout=2");
        var failures = 0;
        var listener = new Herald.Postgres.Notifications.NotificationListener(
            unreachable, "nowhere", _ => Interlocked.Increment(ref failures), TimeSpan.MaxValue, time, Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance);
        listener.EnsureStarted();

        await Eventually.UntilAsync(
            () =>
            {
                time.Advance(TimeSpan.FromSeconds(1));
                return Volatile.Read(ref failures) >= 2;
            },
            "the listener tries again after its first failure");

        await listener.DisposeAsync();
    }

    [Fact]
    public async Task WaitForEvents_WhenTheStoreIsDisposedMeanwhile_ThrowsObjectDisposed()
    {
        var store = await PostgresEventStore.CreateAsync(fixture.DataSource, new PostgresStoreOptions { Schema = fixture.Schema, NotificationFallbackInterval = NoFallback });
        var waiting = store.WaitForEventsAsync(await store.GetLastPositionAsync() + 1_000_000).AsTask();

        await store.DisposeAsync();

        await Assert.ThrowsAsync<ObjectDisposedException>(() => waiting.WaitAsync(Timeout));
    }

    [Fact]
    public async Task ACommitNotifier_WhoseSendFailsWithAnUnexpectedException_GoesOn_AndSendsTheNextNotify()
    {
        // Only NpgsqlException, InvalidOperationException and TimeoutException were caught: any other exception (here from a
        // connection initializer) ended the notifier's loop for good, and every later NOTIFY was dropped without a word.
        var channel = "herald_notify_" + Guid.NewGuid().ToString("N");
        var opens = 0;
        var builder = new NpgsqlDataSourceBuilder(PostgresTestDatabase.ConnectionString);
        builder.UsePhysicalConnectionInitializer(
            _ => { },
            _ => Interlocked.Increment(ref opens) == 1 ? throw new NotSupportedException("the connection hook failed") : Task.CompletedTask);
        await using var failing = builder.Build();
        await using var listening = await fixture.DataSource.OpenConnectionAsync();
        var payloads = new System.Collections.Concurrent.ConcurrentQueue<string>();
        listening.Notification += (_, e) => payloads.Enqueue(e.Payload);
        using var stop = new CancellationTokenSource();
        var pump = await ListenAsync(listening, channel, stop.Token);

        var notifier = new Herald.Postgres.Notifications.CommitNotifier(failing, channel, Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance);
        try
        {
            notifier.Request("lost");
            await Eventually.UntilAsync(() => Volatile.Read(ref opens) >= 1, "the first NOTIFY to fail");
            notifier.Request("after");

            await Eventually.UntilAsync(() => payloads.Contains("after"), "the NOTIFY requested after the failure", Timeout);
        }
        finally
        {
            // The listening connection cannot be disposed while the pump waits on it.
            await stop.CancelAsync();
            await pump;
        }

        await notifier.DisposeAsync();
    }

    [Fact]
    public async Task ACommitNotifier_GivenAPayloadTheServerRefuses_StillNotifiesThePayloadsRequestedWithIt()
    {
        // One statement notified every waiting payload, so one the server refuses (8,000 bytes or more: a queue's long name)
        // failed it twice and the wake-ups of every other queue in it were lost, their consumers left to their poll.
        var channel = "herald_notify_" + Guid.NewGuid().ToString("N");
        await using var listening = await fixture.DataSource.OpenConnectionAsync();
        var payloads = new System.Collections.Concurrent.ConcurrentQueue<string>();
        listening.Notification += (_, e) => payloads.Enqueue(e.Payload);
        using var stop = new CancellationTokenSource();
        var pump = await ListenAsync(listening, channel, stop.Token);

        var notifier = new Herald.Postgres.Notifications.CommitNotifier(fixture.DataSource, channel, Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance);
        try
        {
            notifier.Request([new string('q', 8000), "orders", "payments"]);

            await Eventually.UntilAsync(() => payloads.Contains("orders") && payloads.Contains("payments"), "the NOTIFY of the other payloads", Timeout);
        }
        finally
        {
            await stop.CancelAsync();
            await pump;
        }

        await notifier.DisposeAsync();
    }

    // LISTENs on the channel and delivers its notifications (to the connection's Notification event) until stopped.
    private static async Task<Task> ListenAsync(NpgsqlConnection listening, string channel, CancellationToken stop)
    {
        await using (var listen = new NpgsqlCommand($"LISTEN \"{channel}\"", listening))
        {
            await listen.ExecuteNonQueryAsync(stop);
        }

        return Task.Run(async () =>
        {
            try
            {
                while (true)
                {
                    await listening.WaitAsync(stop);
                }
            }
            catch (OperationCanceledException) when (stop.IsCancellationRequested)
            {
            }
        }, CancellationToken.None);
    }
}
