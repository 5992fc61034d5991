using System.Collections.Concurrent;
using System.Text;
using Herald.Internal;
using Herald.Messages;
using Herald.Postgres.Transport;
using Herald.Conformance;
using Herald.Conformance.Faults;
using Herald.Conformance.Transport;
using Herald.Transport;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Time.Testing;
using Npgsql;

namespace Herald.Postgres.Tests.Transport;

/// <summary>What the PostgreSQL queue promises beyond the transport suite (issue 5): leases, delays, size, dead letters, NOTIFY.</summary>
public sealed class PostgresQueueTransportTests(PostgresSchemaFixture schema) : IClassFixture<PostgresSchemaFixture>, IAsyncLifetime
{
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(15);
    private readonly List<ITransport> _transports = [];

    public Task InitializeAsync() => Task.CompletedTask;

    public async Task DisposeAsync()
    {
        foreach (var transport in _transports)
        {
            await transport.DisposeAsync();
        }
    }

    [Fact]
    public async Task TwoInstances_CompetingOnOneQueue_NeverBothCompleteTheSameMessage()
    {
        const int count = 300;
        var queue = NewQueue();
        var first = await OpenAsync();
        var second = await OpenAsync();
        var completed = new ConcurrentDictionary<Guid, int>();
        var handled = new DeliveryCollector();
        var options = new ConsumerOptions { MaxConcurrency = 4, Prefetch = 8 };
        DeliveryHandler Complete(string name) => async (delivery, cancellationToken) =>
        {
            await delivery.AckAsync(cancellationToken);
            completed.AddOrUpdate(delivery.Envelope.MessageId, 1, (_, n) => n + 1);
            handled.Add(delivery, name);
        };

        await using var a = await first.ConsumeAsync(queue, options, Complete("a"));
        await using var b = await second.ConsumeAsync(queue, options, Complete("b"));
        var sent = Enumerable.Range(0, count).Select(_ => NewEnvelope()).ToList();
        await Task.WhenAll(
            Task.Run(async () => { foreach (var e in sent.Take(count / 2)) { await first.SendAsync(queue, e); } }),
            Task.Run(async () => { foreach (var e in sent.Skip(count / 2)) { await second.SendAsync(queue, e); } }));

        await handled.WaitForMessagesAsync([.. sent.Select(e => e.MessageId)], Deadline, "every message completed");
        await handled.AssertNoMoreThanAsync(count, TimeSpan.FromMilliseconds(300), "a message completed twice");

        Assert.All(sent, e => Assert.Equal(1, completed[e.MessageId]));
        Assert.Equal(2, handled.Items.Select(d => d.Consumer).Distinct().Count());
        Assert.Equal(0L, await CountAsync("queue_messages", queue));
    }

    /// <summary>The transport health check's probe: the start is remembered, but a declare asks the server each time.</summary>
    [Fact]
    public async Task DeclareQueue_AfterTheServerBecomesUnreachable_Fails_InsteadOfAnsweringFromTheRememberedStart()
    {
        var server = new NpgsqlConnectionStringBuilder(PostgresTestDatabase.ConnectionString);
        var forwarder = new TcpForwarder(server.Port);
        var queue = NewQueue();
        var forwarded = new NpgsqlConnectionStringBuilder(server.ConnectionString) { Host = "127.0.0.1", Port = forwarder.Port }.ConnectionString;
        var pool = NpgsqlDataSource.Create(forwarded);
        var options = new PostgresQueueOptions { Schema = schema.Schema };
        var transport = new PostgresQueueTransport(pool, ownsDataSource: true, PostgresQueueTransportFactory.CreateRenewals(forwarded, options), options);
        _transports.Add(transport);
        await using (forwarder)
        {
            await transport.DeclareQueueAsync(queue);
        }

        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(5));
        await Assert.ThrowsAnyAsync<Exception>(() => transport.DeclareQueueAsync(queue, timeout.Token).AsTask());
    }

    [Fact]
    public async Task AConsumerThatDies_WithoutAcking_GivesItsMessagesBack_WhenTheLeaseRunsOut()
    {
        var queue = NewQueue();
        // The dying instance runs on a pool the test closes under it, as a killed process's connections would close.
        var pool = NpgsqlDataSource.Create(PostgresTestDatabase.ConnectionString);
        var options = new PostgresQueueOptions { Schema = schema.Schema, LeaseDuration = TimeSpan.FromSeconds(1) };
        var dying = new PostgresQueueTransport(pool, ownsDataSource: false, PostgresQueueTransportFactory.CreateRenewals(PostgresTestDatabase.ConnectionString, options), options);
        _transports.Add(dying);
        await dying.StartAsync(CancellationToken.None);
        var survivor = await OpenAsync(o => o.PollInterval = TimeSpan.FromMilliseconds(100));
        var sent = NewEnvelope();
        var taken = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await dying.ConsumeAsync(queue, ConsumerOptions.Default, async (_, cancellationToken) =>
        {
            taken.TrySetResult();
            await Task.Delay(Timeout.Infinite, cancellationToken);
        });
        await dying.SendAsync(queue, sent);
        await taken.Task.WaitAsync(Deadline);

        await CrashAsync(pool, dying);
        var started = TimeProvider.System.GetTimestamp();
        var collector = new DeliveryCollector();
        await using var consumer = await survivor.ConsumeAsync(queue, ConsumerOptions.Default, (d, _) =>
        {
            collector.Add(d);
            return ValueTask.CompletedTask;
        });
        var redelivered = (await collector.WaitForCountAsync(1, Deadline, "the message after its lease ran out"))[0];

        Assert.Equal(sent.MessageId, redelivered.Envelope.MessageId);
        Assert.Equal(2, redelivered.Envelope.DeliveryAttempt);
        Assert.True(TimeProvider.System.GetElapsedTime(started) < TimeSpan.FromSeconds(5), "the lease was 1 s, so the message should be back soon");
    }

    [Fact]
    public async Task Delays_OfSendsAndNacks_AreHonouredOnTheTransportsClock()
    {
        var clock = new FakeTimeProvider(DateTimeOffset.UtcNow);
        var queue = NewQueue();
        var transport = await OpenAsync(o => o.TimeProvider = clock);
        var collector = new DeliveryCollector(clock);
        await using var consumer = await transport.ConsumeAsync(queue, ConsumerOptions.Default, async (d, cancellationToken) =>
        {
            collector.Add(d);
            if (d.Envelope.DeliveryAttempt == 1)
            {
                await d.NackAsync(TimeSpan.FromMinutes(5), cancellationToken);
            }
        });
        var start = clock.GetUtcNow();
        await transport.SendAsync(queue, NewEnvelope(), new SendOptions { Delay = TimeSpan.FromMinutes(10) });

        clock.Advance(TimeSpan.FromMinutes(10) - TimeSpan.FromMilliseconds(1));
        await collector.AssertNoMoreThanAsync(0, TimeSpan.FromMilliseconds(300), "a message delayed 10 minutes arrived early");
        clock.Advance(TimeSpan.FromMilliseconds(1));
        var first = (await collector.WaitForCountAsync(1, Deadline, "the delayed message"))[0];
        await WaitUntilAsync(async () => await AttemptsAsync(queue) == 1, "the nack");

        clock.Advance(TimeSpan.FromMinutes(5) - TimeSpan.FromMilliseconds(1));
        await collector.AssertNoMoreThanAsync(1, TimeSpan.FromMilliseconds(300), "a message nacked for 5 minutes came back early");
        clock.Advance(TimeSpan.FromMilliseconds(1));
        var second = (await collector.WaitForCountAsync(2, Deadline, "the nacked message"))[1];

        Assert.Equal(start + TimeSpan.FromMinutes(10), first.ReceivedAt);
        Assert.Equal(start + TimeSpan.FromMinutes(15), second.ReceivedAt);
        Assert.Equal(2, second.Envelope.DeliveryAttempt);
    }

    [Fact]
    public async Task Send_OverTheSizeLimit_IsRefusedBeforeAnythingIsWritten()
    {
        var queue = NewQueue();
        var topic = NewQueue();
        var transport = await OpenAsync(o => o.MaxMessageBytes = 1000);
        await transport.BindAsync(topic, queue);
        var tooBig = NewEnvelope() with { Body = new byte[1001] };

        var error = await Assert.ThrowsAsync<MessageTooLargeException>(() => transport.SendAsync(queue, tooBig).AsTask());
        await Assert.ThrowsAsync<MessageTooLargeException>(() => transport.PublishAsync(topic, tooBig).AsTask());
        await transport.SendAsync(queue, NewEnvelope() with { Body = new byte[1000] });

        Assert.Equal((1001, 1000), (error.Bytes, error.Limit));
        Assert.Equal(1000, transport.Capabilities.MaxMessageBytes);
        Assert.Equal(1L, await CountAsync("queue_messages", queue));
    }

    [Fact]
    public async Task DeadLetters_AreKept_WithTheReasonAndTheEnvelope_AndLeaveTheQueue()
    {
        var queue = NewQueue();
        var transport = (PostgresQueueTransport)await OpenAsync();
        var sent = NewEnvelope() with { PartitionKey = "poison-key", CorrelationId = "flow-7" };
        var collector = new DeliveryCollector();
        await using var consumer = await transport.ConsumeAsync(queue, ConsumerOptions.Default, async (d, cancellationToken) =>
        {
            collector.Add(d);
            if (d.Envelope.DeliveryAttempt == 1)
            {
                throw new InvalidOperationException("first attempt fails");
            }

            await d.DeadLetterAsync("poison: cannot parse", cancellationToken);
        });
        await transport.SendAsync(queue, sent);
        await collector.WaitForCountAsync(2, Deadline, "two attempts");

        IReadOnlyList<QueueDeadLetter> letters = [];
        await WaitUntilAsync(async () => (letters = await transport.ReadDeadLettersAsync(queue, 10)).Count == 1, "the dead letter");
        var letter = letters[0];

        Assert.True(transport.Capabilities.SupportsNativeDeadLetter);
        Assert.Equal("poison: cannot parse", letter.Reason);
        Assert.Equal(queue, letter.Queue);
        Assert.Equal(sent.MessageId, letter.Envelope.MessageId);
        Assert.Equal("flow-7", letter.Envelope.CorrelationId);
        Assert.Equal("poison-key", letter.Envelope.PartitionKey);
        Assert.Equal(sent.Body.ToArray(), letter.Envelope.Body.ToArray());
        Assert.Equal(2, letter.Envelope.DeliveryAttempt);
        Assert.Equal(0L, await CountAsync("queue_messages", queue));
    }

    [Fact]
    public async Task Notify_WakesAnIdleConsumer_OfAnotherInstance_WithoutWaitingForThePoll()
    {
        // The consumer's poll interval is far beyond the test's deadline: only the NOTIFY of the sender's commit can wake it.
        var queue = NewQueue();
        var consuming = (PostgresQueueTransport)await OpenAsync(o => o.PollInterval = TimeSpan.FromHours(1));
        var sending = await OpenAsync();
        var collector = new DeliveryCollector();
        await using var consumer = await consuming.ConsumeAsync(queue, ConsumerOptions.Default, (d, _) =>
        {
            collector.Add(d);
            return ValueTask.CompletedTask;
        });

        for (var i = 1; i <= 3; i++)
        {
            // Each send finds the consumer idle: the previous message was handled and acked, and its claim came up short.
            await sending.SendAsync(queue, NewEnvelope());
            await collector.WaitForCountAsync(i, TimeSpan.FromSeconds(10), $"message {i}, woken by NOTIFY");
            await WaitUntilAsync(async () => await CountAsync("queue_messages", queue) == 0, $"the ack of message {i}");
        }

        Assert.True(consuming.Listener.IsListening);
    }

    [Fact]
    public async Task ConcurrentSends_ShareCommits_AndEachIsCommittedWhenItsSendReturns()
    {
        // Issue 5: sends are grouped into shared commits, but a send still returns only once its own row has committed.
        const int senders = 32;
        const int sendsEach = 8;
        var queue = NewQueue();
        var transport = await OpenAsync();
        var missing = new ConcurrentBag<Guid>();
        await Task.WhenAll(Enumerable.Range(0, senders).Select(_ => Task.Run(async () =>
        {
            for (var i = 0; i < sendsEach; i++)
            {
                var envelope = NewEnvelope();
                await transport.SendAsync(queue, envelope);

                // Read on a connection of its own, so only a committed row counts.
                if (await PostgresTestDatabase.ScalarAsync<long>($"SELECT count(*) FROM \"{schema.Schema}\".queue_messages WHERE message_id = '{envelope.MessageId}'") != 1)
                {
                    missing.Add(envelope.MessageId);
                }
            }
        })));

        Assert.Empty(missing);
        Assert.Equal((long)senders * sendsEach, await CountAsync("queue_messages", queue));
        var transactions = await PostgresTestDatabase.ScalarAsync<long>($"SELECT count(DISTINCT xmin::text) FROM \"{schema.Schema}\".queue_messages WHERE queue = '{queue}'");
        Assert.True(transactions < senders * sendsEach, $"{senders * sendsEach} concurrent sends took {transactions} transactions: none was shared.");
    }

    [Fact]
    public async Task Send_WithAValuePostgresRejects_FailsAlone_AndTheOthersSentWithItCommit()
    {
        // A queue name too long for the ready index (random, so it does not compress) is refused by the server: the group
        // holding it rolls back and its members are sent one by one.
        const int count = 40;
        var queue = NewQueue();
        var tooLong = string.Concat(Enumerable.Range(0, 250).Select(_ => Guid.NewGuid().ToString("N")));
        var transport = await OpenAsync();
        var envelopes = Enumerable.Range(0, count).Select(_ => NewEnvelope()).ToList();

        var outcomes = await SendConcurrentlyAsync(transport, envelopes, i => i == count / 2 ? tooLong : queue);

        Assert.Single(outcomes, o => o is not null);
        Assert.IsType<PostgresException>(outcomes[count / 2]);
        Assert.Equal(count - 1L, await CountAsync("queue_messages", queue));
    }

    [Fact]
    public async Task Send_WithTextTheClientCannotEncode_FailsAlone_AndTheOthersSentWithItCommit()
    {
        // Half of a surrogate pair cannot be encoded as UTF-8: the client threw before the group's statement went out, and
        // every send of the group failed with that one's error.
        const int count = 40;
        var queue = NewQueue();
        var transport = await OpenAsync();
        var envelopes = Enumerable.Range(0, count).Select(i => NewEnvelope() with { CorrelationId = i == count / 2 ? "bad\uD800" : "good" }).ToList();

        var outcomes = await SendConcurrentlyAsync(transport, envelopes, _ => queue);

        Assert.Single(outcomes, o => o is not null);
        Assert.IsAssignableFrom<ArgumentException>(outcomes[count / 2]);
        Assert.Equal(count - 1L, await CountAsync("queue_messages", queue));
    }

    [Fact]
    public async Task SendOrPublish_OfTextHoldingU0000_IsRefusedNamingTheField_BeforeItIsQueued()
    {
        // PostgreSQL's text cannot hold it: the send failed with a bare 22021 (PostgresException) naming neither the message
        // nor the field, after its group had rolled back. Refused up front, as the event store and the outbox refuse it.
        var queue = NewQueue();
        var topic = NewQueue();
        var transport = await OpenAsync();
        await transport.BindAsync(topic, queue);
        var correlated = NewEnvelope() with { CorrelationId = "order-1\0" };
        var user = NewEnvelope() with { UserId = "ann\0" };

        var send = await Assert.ThrowsAsync<ArgumentException>(() => transport.SendAsync(queue, correlated).AsTask());
        var publish = await Assert.ThrowsAsync<ArgumentException>(() => transport.PublishAsync(topic, user).AsTask());
        var name = await Assert.ThrowsAsync<ArgumentException>(() => transport.SendAsync(queue + "\0", NewEnvelope()).AsTask());
        await transport.SendAsync(queue, NewEnvelope());

        Assert.Equal(("envelope", "envelope", "queue"), (send.ParamName, publish.ParamName, name.ParamName));
        Assert.Contains($"The correlation id 'order-1\\u0000' of message {correlated.MessageId} sent to '{queue}' holds the character U+0000", send.Message, StringComparison.Ordinal);
        Assert.Contains($"The user id 'ann\\u0000' of message {user.MessageId} sent to '{topic}'", publish.Message, StringComparison.Ordinal);
        Assert.Contains("The queue name", name.Message, StringComparison.Ordinal);
        Assert.Equal(1L, await CountAsync("queue_messages", queue));
    }

    [Fact]
    public async Task ABurstOfSends_WakesAnIdleConsumerOfAnotherInstance_WithFewerNotifiesThanSends()
    {
        // The NOTIFY leaves after the commits, one per queue at a time; the consumer's poll interval is beyond the deadline.
        const int count = 200;
        var queue = NewQueue();
        var consuming = await OpenAsync(o => o.PollInterval = TimeSpan.FromHours(1));
        var sending = await OpenAsync();
        await using var notifies = await NotifyCounter.ListenAsync($"{schema.Schema}_queue", queue);
        var collector = new DeliveryCollector();
        await using var consumer = await consuming.ConsumeAsync(queue, new ConsumerOptions { MaxConcurrency = 4 }, (d, _) =>
        {
            collector.Add(d);
            return ValueTask.CompletedTask;
        });

        // Queued all at once (each send waits for its commit only after queueing), so commits and notifies have something to share.
        await Task.WhenAll(Enumerable.Range(0, count).Select(_ => sending.SendAsync(queue, NewEnvelope()).AsTask()));
        await collector.WaitForCountAsync(count, TimeSpan.FromSeconds(10), "every message, woken by NOTIFY");

        Assert.InRange(await notifies.CountAsync(), 1, count - 1);
    }

    [Fact]
    public async Task AMessageCommittedWithoutANotify_IsDeliveredAtThePoll()
    {
        // A NOTIFY can be lost (the sender's process dies between its commit and the NOTIFY): that only delays the message.
        var queue = NewQueue();
        var consuming = await OpenAsync(o => o.PollInterval = TimeSpan.FromMilliseconds(200));
        var collector = new DeliveryCollector();
        await using var consumer = await consuming.ConsumeAsync(queue, ConsumerOptions.Default, (d, _) =>
        {
            collector.Add(d);
            return ValueTask.CompletedTask;
        });
        var id = Guid.CreateVersion7();

        await PostgresTestDatabase.ExecuteAsync(
            $"INSERT INTO \"{schema.Schema}\".queue_messages (queue, message_id, message_type, schema_version, time, content_type, body, enqueued_at, visible_at) " +
            $"VALUES ('{queue}', '{id}', 'test', 1, now(), 'application/json', '\\x7b7d', now(), now())");

        var delivered = (await collector.WaitForCountAsync(1, Deadline, "the message nobody announced"))[0];
        Assert.Equal(id, delivered.Envelope.MessageId);
    }

    [Fact]
    public async Task Claim_OnABacklogWithoutStatistics_WalksTheReadyIndexInOrder()
    {
        // Issue 5: with no statistics yet, the planner took a queue for a few dozen rows and read and sorted the whole backlog
        // for every claim. The claim's transaction now rules that plan out.
        await using var fresh = new TemporarySchema();
        var transport = (PostgresQueueTransport)await PostgresQueueTransportFactory.CreateAsync(PostgresTestDatabase.ConnectionString, o => o.Schema = fresh.Name);
        _transports.Add(transport);
        await PostgresTestDatabase.ExecuteAsync(
            $"INSERT INTO \"{fresh.Name}\".queue_messages (queue, message_id, message_type, schema_version, time, content_type, body, enqueued_at, visible_at) " +
            "SELECT 'backlog', gen_random_uuid(), 'test', 1, now(), 'application/json', '\\x7b7d', now(), now() - make_interval(secs => g) FROM generate_series(1, 20000) g");

        await using var connection = new NpgsqlConnection(PostgresTestDatabase.ConnectionString);
        await connection.OpenAsync();
        await using var batch = new NpgsqlBatch(connection);
        batch.BatchCommands.Add(new NpgsqlBatchCommand(transport.Sql.ClaimPlanGuard));
        var explain = new NpgsqlBatchCommand("EXPLAIN " + transport.Sql.Claim);
        explain.Parameters.Add(new NpgsqlParameter<string> { TypedValue = "backlog" });
        explain.Parameters.Add(new NpgsqlParameter<DateTimeOffset> { TypedValue = DateTimeOffset.UtcNow });
        explain.Parameters.Add(new NpgsqlParameter<int> { TypedValue = 17 });
        explain.Parameters.Add(new NpgsqlParameter<Guid> { TypedValue = Guid.CreateVersion7() });
        explain.Parameters.Add(new NpgsqlParameter<DateTimeOffset> { TypedValue = DateTimeOffset.UtcNow.AddSeconds(30) });
        batch.BatchCommands.Add(explain);
        var plan = new StringBuilder();
        await using (var reader = await batch.ExecuteReaderAsync())
        {
            await reader.NextResultAsync();
            while (await reader.ReadAsync())
            {
                plan.AppendLine(reader.GetString(0));
            }
        }

        var text = plan.ToString();
        Assert.Contains("Index Scan using queue_messages_ready", text, StringComparison.Ordinal);
        Assert.DoesNotContain("Sort", text, StringComparison.Ordinal);
        Assert.DoesNotContain("Seq Scan", text, StringComparison.Ordinal);
        Assert.DoesNotContain("Bitmap", text, StringComparison.Ordinal);
    }

    [Fact]
    public async Task UsePostgresQueue_ReplacesTheTransport_AndMigratesAtStart()
    {
        var builder = Microsoft.Extensions.Hosting.Host.CreateApplicationBuilder();
        builder.Services.AddHerald(h => h.UsePostgresQueue(PostgresTestDatabase.ConnectionString, o => o.Schema = schema.Schema));
        using var host = builder.Build();
        await host.StartAsync();
        try
        {
            var transport = host.Services.GetRequiredService<ITransport>();
            Assert.IsType<PostgresQueueTransport>(transport);
            Assert.Equal(Herald.Postgres.Schema.Migrations.Latest, await PostgresTestDatabase.ScalarAsync<int>($"SELECT max(version) FROM \"{schema.Schema}\".schema_version"));
        }
        finally
        {
            await host.StopAsync();
        }
    }

    [Fact]
    public async Task Nack_WithHeaders_TheRowKeepsThem_SoTheNextDeliveryCarriesThem()
    {
        var queue = NewQueue();
        var transport = await OpenAsync(o => o.PollInterval = TimeSpan.FromMilliseconds(100));
        var sent = NewEnvelope() with { Headers = new Dictionary<string, string> { ["tenant"] = "acme" } };
        await transport.SendAsync(queue, sent);
        var collector = new DeliveryCollector();
        await using var consumer = await transport.ConsumeAsync(queue, ConsumerOptions.Default, async (delivery, ct) =>
        {
            collector.Add(delivery);
            if (delivery.Envelope.DeliveryAttempt == 1)
            {
                await delivery.NackAsync(TimeSpan.Zero, new Dictionary<string, string> { [HeaderNames.FirstFailure] = "2030-01-02T03:00:00.0000000+00:00" }, ct);
            }
        });

        var again = (await collector.WaitForCountAsync(2, Deadline, "the nacked message came back"))[1].Envelope;

        Assert.Equal(sent.MessageId, again.MessageId);
        Assert.Equal("2030-01-02T03:00:00.0000000+00:00", again.GetHeader(HeaderNames.FirstFailure));
        Assert.Equal("acme", again.GetHeader("tenant"));
        Assert.Equal(2, again.DeliveryAttempt);
    }

    [Theory]
    [InlineData("DROP TABLE \"{0}\".queue_messages")]
    [InlineData("DROP SCHEMA \"{0}\" CASCADE")]
    public async Task AQueueTableDroppedBehindHeraldsBack_IsMadeAgain_ByTheNextSendOrClaim(string drop)
    {
        // RabbitMQ, NATS and SQS make a queue deleted behind Herald's back again; here /health reported the missing table,
        // but every send and claim failed (42P01 undefined_table) until a restart.
        await using var fresh = new TemporarySchema();
        var transport = await PostgresQueueTransportFactory.CreateAsync(PostgresTestDatabase.ConnectionString, o =>
        {
            o.Schema = fresh.Name;
            o.PollInterval = TimeSpan.FromMilliseconds(50);
        });
        _transports.Add(transport);
        var queue = NewQueue();
        await transport.SendAsync(queue, NewEnvelope());

        // A send finds the table missing.
        await PostgresTestDatabase.ExecuteAsync(string.Format(System.Globalization.CultureInfo.InvariantCulture, drop, fresh.Name));
        var sent = NewEnvelope();
        await transport.SendAsync(queue, sent);
        var handled = new DeliveryCollector();
        await using var consumer = await transport.ConsumeAsync(queue, ConsumerOptions.Default, async (delivery, cancellationToken) =>
        {
            await delivery.AckAsync(cancellationToken);
            handled.Add(delivery, "consumer");
        });
        await handled.WaitForMessagesAsync([sent.MessageId], Deadline, "the message sent after the drop");

        // A consumer's claim finds it missing, with nothing sent meanwhile.
        await PostgresTestDatabase.ExecuteAsync(string.Format(System.Globalization.CultureInfo.InvariantCulture, drop, fresh.Name));
        await WaitUntilAsync(
            async () => await PostgresTestDatabase.ScalarAsync<bool>($"SELECT to_regclass('\"{fresh.Name}\".queue_messages') IS NOT NULL"),
            "the consumer's claim makes the table again");
        var later = NewEnvelope();
        await transport.SendAsync(queue, later);
        await handled.WaitForMessagesAsync([sent.MessageId, later.MessageId], Deadline, "the message sent after the claim made the table again");
        await transport.DeclareQueueAsync(queue);
    }

    private async Task<ITransport> OpenAsync(Action<PostgresQueueOptions>? configure = null)
    {
        var transport = await PostgresQueueTransportFactory.CreateAsync(PostgresTestDatabase.ConnectionString, o =>
        {
            o.Schema = schema.Schema;
            configure?.Invoke(o);
        });
        _transports.Add(transport);
        return transport;
    }

    /// <summary>
    /// Stops an instance as a killed process would: its pool closes first, so nothing it held is settled or handed back (its
    /// renewals and hand-backs fail) and the messages come back only when their leases run out.
    /// </summary>
    private static async Task CrashAsync(NpgsqlDataSource pool, ITransport transport)
    {
        await pool.DisposeAsync();
        await transport.DisposeAsync();
    }

    private static string NewQueue() => "q-" + Guid.NewGuid().ToString("N");

    // Sends every envelope at once, each from a task of its own so they share groups; what each send threw, or null.
    private static Task<Exception?[]> SendConcurrentlyAsync(ITransport transport, List<Envelope> envelopes, Func<int, string> queueOf) =>
        Task.WhenAll(envelopes.Select((e, i) => Task.Run(async () =>
        {
            try
            {
                await transport.SendAsync(queueOf(i), e);
                return null;
            }
            catch (Exception ex)
            {
                return ex;
            }
        })));

    private static Envelope NewEnvelope() => new()
    {
        MessageId = Guid.CreateVersion7(),
        MessageType = "test",
        Time = DateTimeOffset.UtcNow,
        Body = Encoding.UTF8.GetBytes("{}"),
    };

    private Task<long> CountAsync(string table, string queue) =>
        PostgresTestDatabase.ScalarAsync<long>($"SELECT count(*) FROM \"{schema.Schema}\".{table} WHERE queue = '{queue}'");

    private Task<int> AttemptsAsync(string queue) =>
        PostgresTestDatabase.ScalarAsync<int>($"SELECT coalesce(max(attempts), -1) FROM \"{schema.Schema}\".queue_messages WHERE queue = '{queue}'");

    // Polls the database with a deadline (there is no signal to await for a row changing).
    private static Task WaitUntilAsync(Func<Task<bool>> condition, string what) =>
        Eventually.UntilAsync(async () => await condition(), what, Deadline);

    /// <summary>
    /// Counts, from a connection of its own, the notifications a channel gets with one payload. A NOTIFY statement names
    /// each queue once, so this counts the statements that named the queue.
    /// </summary>
    private sealed class NotifyCounter : IAsyncDisposable
    {
        private readonly NpgsqlConnection _connection;
        private int _count;

        private NotifyCounter(NpgsqlConnection connection, string payload)
        {
            _connection = connection;
            connection.Notification += (_, e) =>
            {
                if (e.Payload == payload)
                {
                    Interlocked.Increment(ref _count);
                }
            };
        }

        public static async Task<NotifyCounter> ListenAsync(string channel, string payload)
        {
            var connection = new NpgsqlConnection(PostgresTestDatabase.ConnectionString);
            await connection.OpenAsync();
            var counter = new NotifyCounter(connection, payload);
            await using var listen = new NpgsqlCommand($"LISTEN \"{channel}\"", connection);
            await listen.ExecuteNonQueryAsync();
            return counter;
        }

        /// <summary>The notifications committed so far: a round trip makes the server deliver those still pending.</summary>
        public async Task<int> CountAsync()
        {
            await using var ping = new NpgsqlCommand("SELECT 1", _connection);
            await ping.ExecuteScalarAsync();
            return Volatile.Read(ref _count);
        }

        public ValueTask DisposeAsync() => _connection.DisposeAsync();
    }
}
