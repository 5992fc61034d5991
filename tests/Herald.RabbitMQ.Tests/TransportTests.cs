using Herald.RabbitMQ.Transport;
using Herald.Conformance;
using System.Collections.Concurrent;
using System.Text;
using Herald.Messages;
using Herald.Transport;
using RabbitMQ.Client;

namespace Herald.RabbitMQ.Tests;

public sealed class TransportTests : RabbitMqTestBase
{
    [Fact]
    public async Task Send_ThenConsume_RoundTripsTheWholeEnvelope()
    {
        var transport = await CreateTransportAsync();
        var queue = Name("orders");
        var sent = new Envelope
        {
            MessageId = Guid.CreateVersion7(),
            MessageType = "order-placed",
            SchemaVersion = 3,
            Time = new DateTimeOffset(2025, 5, 6, 7, 8, 9, 123, TimeSpan.Zero),
            CorrelationId = "corr-1",
            CausationId = "cause-1",
            UserId = "alice",
            PartitionKey = "order-42",
            ContentType = "application/json; charset=utf-8",
            Headers = new Dictionary<string, string>
            {
                [HeaderNames.TraceParent] = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                ["tenant"] = "acme",
                ["MixedCase"] = "kept",
            },
            Body = Encoding.UTF8.GetBytes("{\"orderId\":42}"),
        };

        await transport.SendAsync(queue, sent);
        var collector = new Collector();
        await ConsumeAsync(transport, queue, collector.Handler);
        await collector.WaitForAsync(1);

        var received = collector.Envelopes.Single();
        Assert.Equal(sent.MessageId, received.MessageId);
        Assert.Equal(sent.MessageType, received.MessageType);
        Assert.Equal(3, received.SchemaVersion);
        Assert.Equal(sent.Time, received.Time);
        Assert.Equal("corr-1", received.CorrelationId);
        Assert.Equal("cause-1", received.CausationId);
        Assert.Equal("alice", received.UserId);
        Assert.Equal("order-42", received.PartitionKey);
        Assert.Equal(sent.ContentType, received.ContentType);
        Assert.Equal(sent.Headers.OrderBy(h => h.Key), received.Headers.OrderBy(h => h.Key));
        Assert.Equal(sent.Body.ToArray(), received.Body.ToArray());
        Assert.Equal(1, received.DeliveryAttempt);
    }

    [Fact]
    public async Task Send_WritesAttributesWithAnAmqpPropertyThereAndTheRestAsCloudEventsHeaders()
    {
        var transport = await CreateTransportAsync();
        var queue = Name("wire");
        var sent = NewEnvelope("order-placed") with { CorrelationId = "corr-9", Headers = new Dictionary<string, string> { [HeaderNames.Source] = "/shop/orders" } };
        await transport.SendAsync(queue, sent);

        var channel = await CreateRawChannelAsync();
        var got = await GetAsync(channel, queue);
        var headers = got.BasicProperties.Headers!;
        string Header(string name) => Encoding.UTF8.GetString((byte[])headers[name]!);
        Assert.Equal("1.0", Header("cloudEvents:specversion"));
        Assert.Equal(sent.Time.UtcDateTime.ToString("yyyy-MM-dd'T'HH:mm:ss.fff'Z'", System.Globalization.CultureInfo.InvariantCulture), Header("cloudEvents:time"));
        Assert.Equal(sent.MessageId.ToString(), got.BasicProperties.MessageId);
        Assert.Equal("order-placed", got.BasicProperties.Type);
        Assert.Equal("/shop/orders", got.BasicProperties.AppId);
        Assert.Equal("corr-9", got.BasicProperties.CorrelationId);
        Assert.Equal("application/json", got.BasicProperties.ContentType);
        Assert.Equal(sent.Time.ToUnixTimeSeconds(), got.BasicProperties.Timestamp.UnixTime);
        Assert.True(got.BasicProperties.Persistent);
        Assert.Equal("{\"n\":1}", Encoding.UTF8.GetString(got.Body.Span));

        // Each attribute once: what a property carries is not repeated as a header (issue 9: headers cost the broker per message).
        Assert.Equal(
            ["cloudEvents:specversion", "cloudEvents:time"],
            headers.Keys.Where(k => k.StartsWith("cloudEvents:", StringComparison.Ordinal)).Order(StringComparer.Ordinal));
    }

    [Fact]
    public async Task Send_ValuesTooLongForAnAmqpProperty_TravelAsCloudEventsHeaders_AndRoundTrip()
    {
        var transport = await CreateTransportAsync();
        var queue = Name("long");
        var type = "order-placed-" + new string('t', 300);
        var source = "/shop/" + new string('s', 300);
        var correlation = new string('c', 200) + "é€" + new string('c', 60);
        var sent = NewEnvelope(type) with { CorrelationId = correlation, Headers = new Dictionary<string, string> { [HeaderNames.Source] = source } };
        await transport.SendAsync(queue, sent);

        var channel = await CreateRawChannelAsync();
        var got = await GetAsync(channel, queue);
        var headers = got.BasicProperties.Headers!;
        string Header(string name) => Encoding.UTF8.GetString((byte[])headers[name]!);
        Assert.Equal(type, Header("cloudEvents:type"));
        Assert.Equal(source, Header("cloudEvents:source"));
        Assert.Equal(correlation, Header("cloudEvents:correlationid"));
        Assert.Null(got.BasicProperties.Type);
        Assert.Null(got.BasicProperties.AppId);
        Assert.Null(got.BasicProperties.CorrelationId);

        await transport.SendAsync(queue, sent);
        var collector = new Collector();
        await ConsumeAsync(transport, queue, collector.Handler);
        await collector.WaitForAsync(1);
        var received = collector.Envelopes.Single();
        Assert.Equal(sent.MessageId, received.MessageId);
        Assert.Equal(type, received.MessageType);
        Assert.Equal(correlation, received.CorrelationId);
        Assert.Equal(source, received.GetHeader(HeaderNames.Source));
    }

    [Fact]
    public async Task Consume_ReadsTheAllHeadersFormatOfOlderHeraldSenders()
    {
        // What Herald wrote before issue 9: every attribute as a cloudEvents: header, id, type and correlation id also as properties.
        var transport = await CreateTransportAsync();
        var queue = Name("old-format");
        await transport.DeclareQueueAsync(queue);
        var channel = await CreateRawChannelAsync();
        var id = Guid.CreateVersion7();
        var time = new DateTimeOffset(2026, 1, 2, 3, 4, 5, 678, TimeSpan.Zero);
        await channel.BasicPublishAsync(string.Empty, queue, false, new BasicProperties
        {
            MessageId = id.ToString(),
            Type = "order-placed",
            Timestamp = new AmqpTimestamp(time.ToUnixTimeSeconds()),
            CorrelationId = "corr-old",
            ContentType = "application/json",
            Persistent = true,
            Headers = new Dictionary<string, object?>
            {
                ["cloudEvents:specversion"] = "1.0"u8.ToArray(),
                ["cloudEvents:id"] = Encoding.UTF8.GetBytes(id.ToString()),
                ["cloudEvents:type"] = "order-placed"u8.ToArray(),
                ["cloudEvents:source"] = "/shop/old"u8.ToArray(),
                ["cloudEvents:time"] = "2026-01-02T03:04:05.678Z"u8.ToArray(),
                ["cloudEvents:dataschema"] = "urn:herald:schema:order-placed:2"u8.ToArray(),
                ["cloudEvents:correlationid"] = "corr-old"u8.ToArray(),
                ["cloudEvents:causationid"] = "cause-old"u8.ToArray(),
                ["cloudEvents:partitionkey"] = "order-1"u8.ToArray(),
                ["cloudEvents:tenant"] = "acme"u8.ToArray(),
            },
        }, Encoding.UTF8.GetBytes("{\"n\":1}"));

        var collector = new Collector();
        await ConsumeAsync(transport, queue, collector.Handler);
        await collector.WaitForAsync(1);
        var received = collector.Envelopes.Single();
        Assert.Equal(id, received.MessageId);
        Assert.Equal("order-placed", received.MessageType);
        Assert.Equal(2, received.SchemaVersion);
        Assert.Equal(time, received.Time);
        Assert.Equal("corr-old", received.CorrelationId);
        Assert.Equal("cause-old", received.CausationId);
        Assert.Equal("order-1", received.PartitionKey);
        Assert.Equal("/shop/old", received.GetHeader(HeaderNames.Source));
        Assert.Equal("acme", received.GetHeader("tenant"));
    }

    [Fact]
    public async Task Consume_AnAttributeHeaderWinsOverTheAmqpProperty()
    {
        // A CloudEvents client that writes both: the cloudEvents: header is the attribute, the property only a copy for plain clients.
        var transport = await CreateTransportAsync();
        var queue = Name("both");
        await transport.DeclareQueueAsync(queue);
        var channel = await CreateRawChannelAsync();
        var id = Guid.CreateVersion7();
        await channel.BasicPublishAsync(string.Empty, queue, false, new BasicProperties
        {
            MessageId = Guid.CreateVersion7().ToString(),
            Type = "property-type",
            AppId = "/from-app-id",
            CorrelationId = "property-corr",
            Headers = new Dictionary<string, object?>
            {
                ["cloudEvents:specversion"] = "1.0"u8.ToArray(),
                ["cloudEvents:id"] = Encoding.UTF8.GetBytes(id.ToString()),
                ["cloudEvents:type"] = "header-type"u8.ToArray(),
                ["cloudEvents:source"] = "/from-header"u8.ToArray(),
                ["cloudEvents:time"] = "2026-01-02T03:04:05.678Z"u8.ToArray(),
                ["cloudEvents:correlationid"] = "header-corr"u8.ToArray(),
            },
        }, Encoding.UTF8.GetBytes("{}"));

        var collector = new Collector();
        await ConsumeAsync(transport, queue, collector.Handler);
        await collector.WaitForAsync(1);
        var received = collector.Envelopes.Single();
        Assert.Equal(id, received.MessageId);
        Assert.Equal("header-type", received.MessageType);
        Assert.Equal("header-corr", received.CorrelationId);
        Assert.Equal("/from-header", received.GetHeader(HeaderNames.Source));
    }

    [Fact]
    public async Task Publish_FansOutToEveryBoundQueue()
    {
        var transport = await CreateTransportAsync();
        var topic = Name("order-placed");
        var billing = Name("billing");
        var shipping = Name("shipping");
        await transport.BindAsync(topic, billing);
        await transport.BindAsync(topic, shipping);
        await transport.BindAsync(topic, shipping);

        var sent = NewEnvelope();
        await transport.PublishAsync(topic, sent);

        var a = new Collector();
        var b = new Collector();
        await ConsumeAsync(transport, billing, a.Handler);
        await ConsumeAsync(transport, shipping, b.Handler);
        await a.WaitForAsync(1);
        await b.WaitForAsync(1);
        Assert.Equal(sent.MessageId, Assert.Single(a.Envelopes).MessageId);
        Assert.Equal(sent.MessageId, Assert.Single(b.Envelopes).MessageId);
    }

    [Fact]
    public async Task Publish_ToTopicWithoutQueues_DoesNotThrow()
    {
        var transport = await CreateTransportAsync();
        await transport.PublishAsync(Name("nobody-listens"), NewEnvelope());
        await transport.PublishAsync(Name("nobody-listens"), NewEnvelope());
    }

    [Fact]
    public async Task Send_ToQueueDeletedBehindItsBack_ThrowsUnroutableAndTheNextSendDeclaresItAgain()
    {
        var transport = await CreateTransportAsync();
        var queue = Name("deleted");
        await transport.SendAsync(queue, NewEnvelope());
        await BrokerAdmin.DeleteAllAsync(queue);

        var error = await Assert.ThrowsAsync<HeraldException>(async () => await transport.SendAsync(queue, NewEnvelope()));
        Assert.Contains("could not route", error.Message, StringComparison.Ordinal);
        Assert.Contains(queue, error.Message, StringComparison.Ordinal);

        await transport.SendAsync(queue, NewEnvelope());
        var collector = new Collector();
        await ConsumeAsync(transport, queue, collector.Handler);
        await collector.WaitForAsync(1);
    }

    [Fact]
    public async Task Create_WithUnreachableBroker_FailsNamingTheHost()
    {
        var options = new RabbitMqTransportOptions { ConnectionUri = new Uri("amqp://guest:guest@127.0.0.1:1/"), ClientProvidedName = Prefix };
        var error = await Assert.ThrowsAsync<HeraldException>(() => RabbitMqTransportFactory.CreateAsync(options));
        Assert.Contains("127.0.0.1:1", error.Message, StringComparison.Ordinal);
        Assert.DoesNotContain("guest:guest", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task Send_LargerThanTheLimit_ThrowsBeforeSending()
    {
        var transport = await CreateTransportAsync(o => o.MaxMessageBytes = 1024);
        Assert.Equal(1024, transport.Capabilities.MaxMessageBytes);
        var error = await Assert.ThrowsAsync<MessageTooLargeException>(async () =>
            await transport.SendAsync(Name("big"), NewEnvelope() with { Body = new byte[1025] }));
        Assert.Equal(1025, error.Bytes);
    }

    [Fact]
    public void Capabilities_AreDeclared()
    {
        var transport = new RabbitMqTransport(new RabbitMqTransportOptions { ConnectionUri = BrokerAdmin.AmqpUri }, TimeProvider.System, Microsoft.Extensions.Logging.Abstractions.NullLoggerFactory.Instance);
        Assert.Equal("rabbitmq", transport.Name);
        Assert.True(transport.Capabilities.IsDurable);
        Assert.True(transport.Capabilities.SupportsDelayedDelivery);
        Assert.True(transport.Capabilities.SupportsNativeDeadLetter);
        Assert.True(transport.Capabilities.PreservesOrderPerPartitionKey);
        Assert.Equal(255, transport.Capabilities.MaxNameBytes);
        Assert.Equal(TimeSpan.FromMilliseconds(int.MaxValue), transport.Capabilities.MaxDelay);
    }

    [Fact]
    public async Task CompetingConsumers_HandleEachMessageOnce()
    {
        var transport = await CreateTransportAsync();
        var other = await CreateTransportAsync();
        var queue = Name("work");
        var seen = new ConcurrentDictionary<Guid, int>();
        var byConsumer = new int[2];
        DeliveryHandler Handler(int index) => (delivery, _) =>
        {
            seen.AddOrUpdate(delivery.Envelope.MessageId, 1, (_, n) => n + 1);
            Interlocked.Increment(ref byConsumer[index]);
            return ValueTask.CompletedTask;
        };

        await transport.DeclareQueueAsync(queue);
        await ConsumeAsync(transport, queue, Handler(0), new ConsumerOptions { Prefetch = 1 });
        await ConsumeAsync(other, queue, Handler(1), new ConsumerOptions { Prefetch = 1 });
        var ids = Enumerable.Range(0, 200).Select(_ => NewEnvelope()).ToList();
        await Task.WhenAll(ids.Select(e => transport.SendAsync(queue, e).AsTask()));

        await Herald.Conformance.Eventually.UntilAsync(() => seen.Count == ids.Count, "every message was handled");
        Assert.All(seen.Values, n => Assert.Equal(1, n));
        Assert.True(byConsumer[0] > 0 && byConsumer[1] > 0, $"both consumers got work ({byConsumer[0]}, {byConsumer[1]})");
    }

    [Fact]
    public async Task Consume_WithConcurrency_KeepsOrderPerPartitionKeyAndRunsKeysInParallel()
    {
        var transport = await CreateTransportAsync();
        var queue = Name("ordered");
        var keys = Enumerable.Range(0, 4).Select(k => $"key-{k}").ToArray();
        for (var i = 0; i < 40; i++)
        {
            var key = keys[i % keys.Length];
            await transport.SendAsync(queue, NewEnvelope(body: $"{{\"n\":{i}}}", partitionKey: key));
        }

        var order = new ConcurrentDictionary<string, ConcurrentQueue<int>>();
        var running = 0;
        var maxRunning = 0;
        var collector = new Collector();
        var overlapped = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        await ConsumeAsync(transport, queue, async (delivery, ct) =>
        {
            var now = Interlocked.Increment(ref running);
            Interlocks.Max(ref maxRunning, now);

            // The first handler holds on until a second one runs beside it (or a deadline passes, and the assertion below
            // reports that they never overlapped).
            if (now > 1)
            {
                overlapped.TrySetResult();
            }

            await Task.WhenAny(overlapped.Task, Task.Delay(Eventually.DefaultTimeout, ct));
            var n = System.Text.Json.JsonDocument.Parse(delivery.Envelope.Body).RootElement.GetProperty("n").GetInt32();
            order.GetOrAdd(delivery.Envelope.PartitionKey!, _ => new()).Enqueue(n);
            Interlocked.Decrement(ref running);
            collector.Add(delivery.Envelope);
        }, new ConsumerOptions { MaxConcurrency = 4, Prefetch = 40 });

        await collector.WaitForAsync(40);
        foreach (var (_, numbers) in order)
        {
            Assert.Equal(numbers.Order(), numbers);
        }

        Assert.True(maxRunning > 1, "handlers ran concurrently");
    }

    [Fact]
    public async Task Handler_ThatThrows_IsRedeliveredWithTheAttemptCounted()
    {
        var transport = await CreateTransportAsync();
        var queue = Name("flaky");
        await transport.SendAsync(queue, NewEnvelope());
        var attempts = new ConcurrentQueue<int>();
        await ConsumeAsync(transport, queue, (delivery, _) =>
        {
            attempts.Enqueue(delivery.Envelope.DeliveryAttempt);
            return delivery.Envelope.DeliveryAttempt < 3 ? throw new InvalidOperationException("boom") : ValueTask.CompletedTask;
        });

        await Herald.Conformance.Eventually.UntilAsync(() => attempts.Count >= 3, "three attempts");
        Assert.Equal([1, 2, 3], attempts.ToArray());
    }

    [Fact]
    public async Task Stop_HandsPrefetchedMessagesBackToTheQueue()
    {
        var transport = await CreateTransportAsync();
        var queue = Name("handback");
        for (var i = 0; i < 10; i++)
        {
            await transport.SendAsync(queue, NewEnvelope());
        }

        var started = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var first = new Collector();
        var consumer = await transport.ConsumeAsync(queue, new ConsumerOptions { Prefetch = 10 }, async (delivery, _) =>
        {
            started.TrySetResult();
            await release.Task;
            first.Add(delivery.Envelope);
        });
        await started.Task.WaitAsync(TimeSpan.FromSeconds(15));
        var stopping = consumer.StopAsync();
        release.SetResult();
        await stopping;
        await consumer.DisposeAsync();
        Assert.Equal(1, first.Count);

        var second = new Collector();
        await ConsumeAsync(transport, queue, second.Handler);
        await second.WaitForAsync(9);
        Assert.DoesNotContain(second.Envelopes, e => e.MessageId == first.Envelopes[0].MessageId);
    }

    [Fact]
    public async Task Settle_Twice_IsIgnored()
    {
        var transport = await CreateTransportAsync();
        var queue = Name("settle");
        await transport.SendAsync(queue, NewEnvelope());
        await transport.SendAsync(queue, NewEnvelope());
        var collector = new Collector();
        await ConsumeAsync(transport, queue, async (delivery, ct) =>
        {
            await delivery.AckAsync(ct);
            await delivery.NackAsync(TimeSpan.Zero, ct);
            await delivery.DeadLetterAsync("no", ct);
            collector.Add(delivery.Envelope);
        });
        await collector.WaitForAsync(2);
        var channel = await CreateRawChannelAsync();
        Assert.Equal(0u, (await channel.QueueDeclarePassiveAsync(queue)).MessageCount);
    }

    [Fact]
    public async Task PublisherConfirmsOff_StillDeliversPersistently()
    {
        var transport = await CreateTransportAsync(o => o.PublisherConfirms = false);
        var queue = Name("fast");
        var sent = Enumerable.Range(0, 20).Select(_ => NewEnvelope()).ToList();
        foreach (var envelope in sent)
        {
            await transport.SendAsync(queue, envelope);
        }

        var collector = new Collector();
        await ConsumeAsync(transport, queue, collector.Handler);
        await collector.WaitForAsync(20);
        Assert.Equal(sent.Select(e => e.MessageId), collector.Envelopes.Select(e => e.MessageId));
    }

    [Fact]
    public async Task DeclareTopologyOff_SendToAQueueNobodyDeclared_ThrowsUnroutable()
    {
        var transport = await CreateTransportAsync(o => o.DeclareTopology = false);
        var error = await Assert.ThrowsAsync<HeraldException>(async () => await transport.SendAsync(Name("missing"), NewEnvelope()));
        Assert.Contains("could not route", error.Message, StringComparison.Ordinal);
        Assert.Empty(await BrokerAdmin.QueueNamesAsync(Prefix));
    }

    [Fact]
    public async Task Declare_OverAQueueOfAnotherType_FailsSayingSo_AndTheTransportStaysUsable()
    {
        var quorum = await CreateTransportAsync(o => o.QueueType = RabbitMqQueueType.Quorum);
        var classic = await CreateTransportAsync();
        var queue = Name("typed");
        await quorum.DeclareQueueAsync(queue);

        var error = await Assert.ThrowsAsync<HeraldException>(async () => await classic.DeclareQueueAsync(queue));
        Assert.Contains("other settings", error.Message, StringComparison.Ordinal);
        Assert.Contains(queue, error.Message, StringComparison.Ordinal);

        var other = Name("fine");
        await classic.SendAsync(other, NewEnvelope());
        var collector = new Collector();
        await ConsumeAsync(classic, other, collector.Handler);
        await collector.WaitForAsync(1);
    }

    [Fact]
    public async Task Consume_WhileOneHandlerIsSlow_TheOthersAreHandledOnTheFreeLane()
    {
        // Issue 9: lanes are picked counting a running handler, so a message arriving while a lane is free never queues
        // behind a slow one (picking by queue length alone sent every other one there).
        var transport = await CreateTransportAsync();
        var queue = Name("slow-one");
        var slow = NewEnvelope();
        var started = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var others = 0;
        await using var consumer = await transport.ConsumeAsync(queue, new ConsumerOptions { MaxConcurrency = 2 }, async (delivery, ct) =>
        {
            if (delivery.Envelope.MessageId == slow.MessageId)
            {
                started.TrySetResult();
                await release.Task.WaitAsync(ct);
            }
            else
            {
                Interlocked.Increment(ref others);
            }
        });
        await transport.SendAsync(queue, slow);
        await started.Task.WaitAsync(TimeSpan.FromSeconds(15));

        for (var i = 1; i <= 6; i++)
        {
            await transport.SendAsync(queue, NewEnvelope());
            var expected = i;
            await Herald.Conformance.Eventually.UntilAsync(() => Volatile.Read(ref others) == expected, $"message {i} was handled while the slow one still ran");
        }

        release.SetResult();
        await consumer.StopAsync();
    }
}
