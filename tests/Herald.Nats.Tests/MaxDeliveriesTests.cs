using Herald.Conformance;
using Herald.Hosting;
using Herald.Nats.Transport;
using Herald.Reliability.DeadLetters;
using Herald.Transport;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using NATS.Client.JetStream;

namespace Herald.Nats.Tests;

/// <summary>
/// Issue 13: a message whose last delivery MaxDeliver allows is never settled (its process stopped, or the ack wait ran
/// out) is not delivered again; the server says so only in a max-deliveries advisory, which Herald keeps in a stream and
/// drains into the dead-letter store.
/// </summary>
public sealed class MaxDeliveriesTests : NatsTestBase
{
    private const string Endpoint = "endpoint";

    [Fact]
    public async Task AMessageWhoseLastDeliveryIsNeverSettled_ReachesTheDeadLetterStoreOnce_ThroughTheAdvisory()
    {
        var transport = await CreateTransportAsync(Configure);

        // Consuming declares the queue's consumer and the stream that keeps its advisories; no Herald consumer runs below.
        await (await transport.ConsumeAsync(Endpoint, ConsumerOptions.Default, (_, _) => ValueTask.CompletedTask)).DisposeAsync();
        var lost = NewEnvelope("never settled") with { MessageType = "nats-ping" };
        await transport.SendAsync(Endpoint, lost);

        // Two processes that each take the message and stop before settling it: a plain client pulling without acks.
        var durable = await transport.JetStream.GetConsumerAsync(Names.QueueStream(Endpoint), Endpoint);
        for (var delivery = 1UL; delivery <= 2; delivery++)
        {
            var delivered = new List<ulong>();
            await foreach (var message in durable.FetchAsync<byte[]>(new NatsJSFetchOpts { MaxMsgs = 1, Expires = Timeout }))
            {
                delivered.Add(message.Metadata!.Value.NumDelivered);
            }

            Assert.Equal([delivery], delivered);
        }

        // A process of the endpoint carries on: the server gives the message up (and says so) when the next pull comes.
        using var host = await StartHostAsync(Endpoint, h => h
            .AddHandler<HostingTests.NatsPingHandler>()
            .ConfigureDeadLetters(o => o.DrainInterval = TimeSpan.FromMilliseconds(200)));
        try
        {
            var manager = host.Services.GetRequiredService<DeadLetterManager>();
            await Eventually.UntilAsync(async () => await manager.CountAsync(new DeadLetterQuery { Endpoint = Endpoint }) > 0, "the host drains it into the store", Timeout);
            await Eventually.UntilAsync(
                async () => (await transport.JetStream.GetStreamAsync(Names.MaxDeliveriesStream(Endpoint))).Info.State.Messages == 0, "the advisory is removed once drained", Timeout);

            // Nothing is left to move (a drain now moves none), the message left its work queue, and it was stored once.
            Assert.Equal(0, await transport.DrainDeadLettersAsync(Endpoint, (_, _) => throw new InvalidOperationException("nothing should be left to drain")));
            Assert.Equal(0, (await transport.JetStream.GetStreamAsync(Names.QueueStream(Endpoint))).Info.State.Messages);
            var deadLetter = Assert.Single((await manager.ListAsync(new DeadLetterQuery { Endpoint = Endpoint })).Items);
            Assert.Equal(lost.MessageId, deadLetter.Envelope.MessageId);
            Assert.Equal("nats-ping", deadLetter.Envelope.MessageType);
            Assert.Equal(lost.Body.ToArray(), deadLetter.Envelope.Body.ToArray());
            Assert.Equal(DeadLetterCause.TransportDeadLettered, deadLetter.Cause);
            Assert.Equal(2, deadLetter.AttemptCount);
            Assert.Contains("MaxDeliver 2", deadLetter.ErrorMessage, StringComparison.Ordinal);
        }
        finally
        {
            await host.StopAsync();
        }
    }

    // Issue 9: a failure on the last delivery MaxDeliver allows, which the retry policy would have redelivered, went to the
    // transport's dead-letter stream with "MaxDeliver" as its reason, and reached the store only at the next drain.
    [Fact]
    public async Task AFailureOnTheLastDeliveryMaxDeliverAllows_IsDeadLetteredByThePipeline_WithItsError()
    {
        const string endpoint = "endpoint-last";
        var transport = await CreateTransportAsync(Configure);
        using var host = await StartHostAsync(endpoint, h => h
            .AddHandler<RefusingPingHandler>()
            .ConfigureRetries(r => r.Immediate(0).Delayed(5, TimeSpan.FromMilliseconds(10), TimeSpan.FromMilliseconds(50))));
        try
        {
            // The pipeline's record, with the handler's error, after the two deliveries the server allows; nothing native.
            var deadLetter = await SendPoisonAsync(host, transport, endpoint);
            Assert.Equal(2, deadLetter.Envelope.DeliveryAttempt);
            Assert.Equal(0, await transport.DrainDeadLettersAsync(endpoint, (_, _) => throw new InvalidOperationException("nothing should have gone native")));
        }
        finally
        {
            await host.StopAsync();
        }
    }

    /// <summary>
    /// Audit (stop 41): whether a failure was on the last delivery was read from this process's MaxDeliver, not from the
    /// durable consumer's as the server has it (made by another process or an earlier deployment with another limit). A
    /// failure on the server's real last delivery was nakked, never delivered again, and reached the store only through the
    /// max-deliveries advisory, as never settled and without the handler's error; with a lower option, a failure was
    /// dead-lettered while the server would still deliver it again. The durable's own limit now decides, and the difference
    /// is logged.
    /// </summary>
    [Theory]
    [InlineData(5, 2)]
    [InlineData(null, 2)]
    [InlineData(2, 3)]
    public async Task AFailureOnTheLastDeliveryOfADurableMadeWithAnotherMaxDeliver_IsDeadLetteredByThePipeline_WithItsError(int? configured, int onTheServer)
    {
        var endpoint = "endpoint-made-" + (configured?.ToString(System.Globalization.CultureInfo.InvariantCulture) ?? "none");
        var transport = await CreateTransportAsync(Configure);

        // Another process made the durable first, with a limit of its own.
        await transport.DeclareQueueAsync(endpoint);
        await transport.JetStream.CreateOrUpdateConsumerAsync(Names.QueueStream(endpoint), new NATS.Client.JetStream.Models.ConsumerConfig(NatsNames.Durable(endpoint))
        {
            AckPolicy = NATS.Client.JetStream.Models.ConsumerConfigAckPolicy.Explicit,
            AckWait = TimeSpan.FromSeconds(1),
            MaxDeliver = onTheServer,
        });

        var log = new TestOutputLogger();
        var warned = log.WhenLoggedAsync("MaxDeliver " + onTheServer.ToString(System.Globalization.CultureInfo.InvariantCulture) + " on the server");
        using var host = await StartHostAsync(
            endpoint,
            h => h
                .AddHandler<RefusingPingHandler>()
                .ConfigureRetries(r => r.Immediate(0).Delayed(5, TimeSpan.FromMilliseconds(10), TimeSpan.FromMilliseconds(50)))
                .ConfigureDeadLetters(o => o.DrainInterval = TimeSpan.FromMilliseconds(200)),
            o => o.MaxDeliver = configured,
            log);
        try
        {
            // The pipeline's record, with the handler's error, on the last delivery the server's durable allows.
            var deadLetter = await SendPoisonAsync(host, transport, endpoint);
            Assert.Equal(onTheServer, deadLetter.Envelope.DeliveryAttempt);
            await warned.WaitAsync(Timeout);
        }
        finally
        {
            await host.StopAsync();
        }
    }

    /// <summary>
    /// Audit (stop 41): the stream keeping a queue's max-deliveries advisories was remembered once made, so deleted while
    /// the process ran it was not made again until a restart, and every advisory meanwhile (the only record of a message
    /// JetStream stopped delivering) was lost. A running consumer now asks the server at each lag refresh.
    /// </summary>
    [Fact]
    public async Task TheAdvisoryStream_DeletedWhileAConsumerRuns_IsMadeAgain_AndAMessageWhoseDeliveriesRunOutAfter_IsDeadLettered()
    {
        const string queue = "endpoint-advisories-gone";
        var log = new TestOutputLogger();
        using var loggers = LoggerFactory.Create(l => l.AddProvider(log));
        var transport = await CreateTransportAsync(
            o =>
            {
                Configure(o);
                o.LagRefreshInterval = TimeSpan.FromMilliseconds(100);
            },
            loggerFactory: loggers);
        var remade = log.WhenLoggedAsync("keeping the max-deliveries advisories");
        await using (await transport.ConsumeAsync(queue, ConsumerOptions.Default, (_, _) => ValueTask.CompletedTask))
        {
            await transport.JetStream.DeleteStreamAsync(Names.MaxDeliveriesStream(queue));
            await Eventually.UntilAsync(async () => await StreamExistsAsync(transport, Names.MaxDeliveriesStream(queue)), "the running consumer makes the advisory stream again", Timeout);
            await remade.WaitAsync(Timeout);
        }

        // The same process (transport) goes on: a message is taken by two processes that stop before settling it.
        var lost = NewEnvelope("its deliveries run out");
        await transport.SendAsync(queue, lost);
        await NeverSettleAsync(transport, queue, deliveries: 2);

        var drained = new List<NativeDeadLetter>();
        Assert.Equal(1, await transport.DrainDeadLettersAsync(queue, (deadLetter, _) =>
        {
            drained.Add(deadLetter);
            return ValueTask.CompletedTask;
        }));
        Assert.Equal(lost.MessageId, Assert.Single(drained).Envelope.MessageId);
    }

    /// <summary>
    /// Audit (stop 41): the reason of a dead letter drained from a max-deliveries advisory printed this process's MaxDeliver
    /// (or none, without the option), not the limit of the durable the server stopped delivering from, made by another
    /// process with another limit. The advisory's deliveries, the server's limit, are printed now.
    /// </summary>
    [Theory]
    [InlineData(5, 2)]
    [InlineData(null, 2)]
    public async Task AMessageNeverSettledOnTheLastDeliveryOfADurableMadeWithAnotherMaxDeliver_IsDeadLetteredWithTheServersLimit(int? configured, int onTheServer)
    {
        var queue = "endpoint-lost-made-" + (configured?.ToString(System.Globalization.CultureInfo.InvariantCulture) ?? "none");
        var transport = await CreateTransportAsync(o =>
        {
            Configure(o);
            o.MaxDeliver = configured;
        });

        // Another process made the durable first, with a limit of its own; this one consumes it (and keeps its advisories).
        await transport.DeclareQueueAsync(queue);
        await transport.JetStream.CreateOrUpdateConsumerAsync(Names.QueueStream(queue), new NATS.Client.JetStream.Models.ConsumerConfig(NatsNames.Durable(queue))
        {
            AckPolicy = NATS.Client.JetStream.Models.ConsumerConfigAckPolicy.Explicit,
            AckWait = TimeSpan.FromSeconds(1),
            MaxDeliver = onTheServer,
        });
        await (await transport.ConsumeAsync(queue, ConsumerOptions.Default, (_, _) => ValueTask.CompletedTask)).DisposeAsync();

        var lost = NewEnvelope("never settled");
        await transport.SendAsync(queue, lost);
        await NeverSettleAsync(transport, queue, onTheServer);

        var drained = new List<NativeDeadLetter>();
        Assert.Equal(1, await transport.DrainDeadLettersAsync(queue, (deadLetter, _) =>
        {
            drained.Add(deadLetter);
            return ValueTask.CompletedTask;
        }));
        var reason = Assert.Single(drained).Reason;
        Assert.Contains("(MaxDeliver " + onTheServer.ToString(System.Globalization.CultureInfo.InvariantCulture) + ")", reason, StringComparison.Ordinal);
        if (configured is { } option)
        {
            Assert.DoesNotContain("MaxDeliver " + option.ToString(System.Globalization.CultureInfo.InvariantCulture), reason, StringComparison.Ordinal);
        }
    }

    /// <summary>Audit (stop 41): a consumer started again in the same process found the deleted advisory stream in its cache, not made again.</summary>
    [Fact]
    public async Task AConsumerStarted_AfterTheAdvisoryStreamWasDeleted_MakesItAgain_BeforeItsFirstPull()
    {
        const string queue = "endpoint-restarted";
        var transport = await CreateTransportAsync(Configure);
        await (await transport.ConsumeAsync(queue, ConsumerOptions.Default, (_, _) => ValueTask.CompletedTask)).DisposeAsync();
        await transport.JetStream.DeleteStreamAsync(Names.MaxDeliveriesStream(queue));

        await using (await transport.ConsumeAsync(queue, ConsumerOptions.Default, (_, _) => ValueTask.CompletedTask))
        {
            // At once: the consumer's first pull may bring the advisory of a message another process left on its last delivery.
            Assert.True(await StreamExistsAsync(transport, Names.MaxDeliveriesStream(queue)), "the advisory stream is made again when the consumer starts");
        }
    }

    [Fact]
    public void AStoredMessagesHeaderBlock_IsReadBack()
    {
        var block = Convert.ToBase64String("NATS/1.0\r\nce-id: 42\r\nce-type:order-placed\r\nX-Twice: a\r\nX-Twice: b\r\n\r\n"u8.ToArray());
        var headers = NatsTransport.StoredHeaders(block)!;
        Assert.Equal("42", headers["ce-id"].ToString());
        Assert.Equal("order-placed", headers["ce-type"].ToString());
        Assert.Equal(new[] { "a", "b" }, headers["X-Twice"].ToArray());
        Assert.Null(NatsTransport.StoredHeaders(null));
    }

    [Fact]
    public void AnAdvisory_IsRead_AndAnythingElseIsRefusedWithAReason()
    {
        var advisory = MaxDeliveriesAdvisory.Read(
            """{"type":"io.nats.jetstream.advisory.v1.max_deliver","id":"x","timestamp":"2026-12-04T13:00:00.5Z","stream":"S","consumer":"c","stream_seq":7,"deliveries":3}"""u8.ToArray(),
            out var failure);
        Assert.Null(failure);
        Assert.Equal(new MaxDeliveriesAdvisory("S", "c", 7, 3, new DateTimeOffset(2026, 12, 4, 13, 0, 0, 500, TimeSpan.Zero)), advisory);
        Assert.Null(MaxDeliveriesAdvisory.Read("""{"stream":"S","consumer":"c","stream_seq":7}"""u8.ToArray(), out failure)!.Deliveries);
        Assert.Null(MaxDeliveriesAdvisory.Read("not json"u8.ToArray(), out failure));
        Assert.NotNull(failure);
        Assert.Null(MaxDeliveriesAdvisory.Read("""{"stream":"S","consumer":"c"}"""u8.ToArray(), out failure));
        Assert.NotNull(failure);
    }

    /// <summary>
    /// Sends a ping the host's handler refuses every time, and returns its one dead letter once its queue is empty, checked
    /// to be the pipeline's (retries exhausted, the handler's error), not one that came through the transport.
    /// </summary>
    private async Task<DeadLetter> SendPoisonAsync(IHost host, NatsTransport transport, string endpoint)
    {
        await host.Services.GetRequiredService<Herald.Handling.IMessageBus>().SendAsync(new HostingTests.NatsPing("poison"));

        var manager = host.Services.GetRequiredService<DeadLetterManager>();
        await Eventually.UntilAsync(async () => await manager.CountAsync(new DeadLetterQuery { Endpoint = endpoint }) == 1, "the poison is dead-lettered", Timeout);
        await Eventually.UntilAsync(
            async () => (await transport.JetStream.GetStreamAsync(Names.QueueStream(endpoint))).Info.State.Messages == 0, "the poison leaves its queue", Timeout);

        var deadLetter = Assert.Single((await manager.ListAsync(new DeadLetterQuery { Endpoint = endpoint })).Items);
        Assert.Equal(DeadLetterCause.RetriesExhausted, deadLetter.Cause);
        Assert.Equal(typeof(InvalidOperationException).FullName, deadLetter.ErrorType);
        Assert.Equal(RefusingPingHandler.Refusal, deadLetter.ErrorMessage);
        return deadLetter;
    }

    /// <summary>
    /// The queue's one message taken <paramref name="deliveries"/> times (the durable's limit) by processes that stop
    /// before settling it, then pulled until the server gives it up and its advisory is kept.
    /// </summary>
    private async Task NeverSettleAsync(NatsTransport transport, string queue, int deliveries)
    {
        var durable = await transport.JetStream.GetConsumerAsync(Names.QueueStream(queue), NatsNames.Durable(queue));
        for (var delivery = 1; delivery <= deliveries; delivery++)
        {
            var count = 0;
            await foreach (var _ in durable.FetchAsync<byte[]>(new NatsJSFetchOpts { MaxMsgs = 1, Expires = Timeout }))
            {
                count++;
            }

            Assert.Equal(1, count);
        }

        // The next pull, once the ack wait ran out, is when the server gives the message up and says so.
        await Eventually.UntilAsync(
            async () =>
            {
                await foreach (var _ in durable.FetchAsync<byte[]>(new NatsJSFetchOpts { MaxMsgs = 1, Expires = TimeSpan.FromSeconds(2) }))
                {
                    Assert.Fail("delivered after its last delivery");
                }

                return (await transport.JetStream.GetStreamAsync(Names.MaxDeliveriesStream(queue))).Info.State.Messages == 1;
            },
            "the advisory is kept",
            Timeout);
    }

    private static async Task<bool> StreamExistsAsync(NatsTransport transport, string stream)
    {
        try
        {
            await transport.JetStream.GetStreamAsync(stream);
            return true;
        }
        catch (NatsJSApiException e) when (e.Error.Code == 404)
        {
            return false;
        }
    }

    /// <summary>
    /// Stop 43: a consumer stopped while it held a message on the last delivery MaxDeliver allows (its handler aborted by
    /// the stop, or prefetched and never started) nakked it; the server had already counted that delivery, so it never
    /// delivered the message again and its max-deliveries advisory dead-lettered it, though no handler ever finished with
    /// it. Such a message is now put back in the queue's stream (the original acked once the copy is stored), carrying the
    /// attempts made, so the next consumer handles it, as the last attempt.
    /// </summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public async Task AMessageOnItsLastDelivery_HeldByAConsumerThatStops_IsHandledByTheNextConsumer_NotDeadLettered(bool prefetched)
    {
        var queue = "last-held-" + (prefetched ? "prefetched" : "aborted");
        var transport = await CreateTransportAsync(Configure);
        var options = ConsumerOptions.Default with { MaxConcurrency = 1, Prefetch = 4 };
        var blocking = NewEnvelope("blocking");
        var held = NewEnvelope("held");

        // Both sent before the consumer starts, so both first deliveries reach its lane before any redelivery: sent after,
        // the first message's redelivery could come ahead of the second's first delivery and block the only handler on it.
        await transport.SendAsync(queue, prefetched ? blocking : held);
        if (prefetched)
        {
            await transport.SendAsync(queue, held);
        }

        // The first consumer hands every message back on its first delivery and blocks, until the stop aborts it, on the
        // second (the last MaxDeliver 2 allows) of the one it runs: the other, on its last delivery too, waits in its lane.
        var running = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var (first, _) = await ConsumeAsync(
            transport,
            queue,
            async (delivery, cancellationToken) =>
            {
                if (delivery.Envelope.DeliveryAttempt == 1)
                {
                    await delivery.NackAsync(TimeSpan.Zero, cancellationToken);
                    return;
                }

                running.TrySetResult();
                await Task.Delay(System.Threading.Timeout.Infinite, cancellationToken);
            },
            options);
        await running.Task.WaitAsync(Timeout);
        if (prefetched)
        {
            // Both on their second delivery, the one the handler does not run among them.
            var durable = await transport.JetStream.GetConsumerAsync(Names.QueueStream(queue), NatsNames.Durable(queue));
            await Eventually.UntilAsync(
                async () =>
                {
                    await durable.RefreshAsync();
                    return durable.Info is { NumAckPending: 2, NumRedelivered: 2 };
                },
                "both messages delivered the second time",
                Timeout);
        }

        // A stop that aborts its handler at once.
        await first.StopAsync(new CancellationToken(canceled: true));
        await first.DisposeAsync();

        var (second, seen) = await ConsumeAsync(transport, queue, (delivery, cancellationToken) => delivery.AckAsync(cancellationToken), options);
        await using (second)
        {
            await Eventually.UntilAsync(() => seen.Any(e => e.MessageId == held.MessageId), "the next consumer handles the held message", Timeout);
            var handled = seen.Single(e => e.MessageId == held.MessageId);
            Assert.Equal(2, handled.DeliveryAttempt);
            Assert.Equal(TextOf(held), TextOf(handled));
            Assert.Equal(0, await transport.DrainDeadLettersAsync(queue, (_, _) => throw new InvalidOperationException("a message held at the stop was dead-lettered")));
        }
    }

    /// <summary>
    /// Stop 46: a mapped queue's message (a declared stream read through a filter) received and not handled when its
    /// consumer stopped was nakked, each nak a delivery: stops alone took it past MaxDeliver, and its max-deliveries
    /// advisory dead-lettered it though no handler ever failed on it. It is now put back in the queue's delay stream (its
    /// original acked) and handled from there by the next consumer, once, as the last attempt; the other queue reading the
    /// same subjects sees it once, as before.
    /// </summary>
    [Fact]
    public async Task AMappedQueuesMessage_HeldByConsumersThatStopUntilItsLastDelivery_IsHandledOnceByTheNextConsumer_NotDeadLettered()
    {
        var stream = Prefixes.Streams + "_MAPPED";
        var subjects = Prefixes.Subjects + ".mapped";
        const string queue = "mapped-held";
        const string other = "mapped-other";
        var transport = await CreateTransportAsync(o =>
        {
            Configure(o);

            // Nothing here waits for an ack wait to run out, and one that ran out on a loaded machine (a keep-alive late)
            // would count a delivery the test does not make.
            o.AckWait = TimeSpan.FromSeconds(10);
            var declared = new NatsStreamOptions { Name = stream };
            declared.Subjects.Add(subjects + ".*");
            o.Streams.Add(declared);
            o.Queues[queue] = new NatsQueueOptions { Stream = stream, FilterSubject = subjects + ".*", SendSubject = subjects + ".held" };
            o.Queues[other] = new NatsQueueOptions { Stream = stream, FilterSubject = subjects + ".*", SendSubject = subjects + ".other" };
        });
        var options = ConsumerOptions.Default with { MaxConcurrency = 1, Prefetch = 4 };
        var blocking = NewEnvelope("blocking");
        var held = NewEnvelope("held");

        // The other queue's durable made before the sends, so it takes both from the start.
        var (otherConsumer, otherSeen) = await ConsumeAsync(transport, other, (delivery, cancellationToken) => delivery.AckAsync(cancellationToken), options);
        await transport.SendAsync(queue, blocking);
        await transport.SendAsync(queue, held);
        INatsJSConsumer? durable = null;

        // Two consumers (MaxDeliver 2) each run one of the messages until the stop aborts it while the other waits in its lane:
        // neither is ever handled, and the second stop comes on the last delivery of both.
        for (var delivered = 1; delivered <= 2; delivered++)
        {
            var running = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            var (stopping, _) = await ConsumeAsync(
                transport,
                queue,
                async (_, cancellationToken) =>
                {
                    running.TrySetResult();
                    await Task.Delay(System.Threading.Timeout.Infinite, cancellationToken);
                },
                options);
            await running.Task.WaitAsync(Timeout);
            durable ??= await transport.JetStream.GetConsumerAsync(stream, NatsNames.Durable(queue));
            var redelivered = delivered - 1;
            await Eventually.UntilAsync(
                async () =>
                {
                    await durable.RefreshAsync();
                    return durable.Info.NumAckPending == 2 && durable.Info.NumRedelivered == redelivered * 2;
                },
                $"both messages received by consumer {delivered}",
                Timeout);
            // The handler aborted once the stop's pulls have drained (a stop given up at once may abandon it instead).
            using (var deadline = new CancellationTokenSource(TimeSpan.FromSeconds(6)))
            {
                await stopping.StopAsync(deadline.Token);
            }

            await stopping.DisposeAsync();
        }

        var (next, seen) = await ConsumeAsync(transport, queue, (delivery, cancellationToken) => delivery.AckAsync(cancellationToken), options);
        await using (next)
        await using (otherConsumer)
        {
            await Eventually.UntilAsync(
                () => seen.Any(e => e.MessageId == held.MessageId) && seen.Any(e => e.MessageId == blocking.MessageId), "the next consumer handles both messages", Timeout);

            // Everything settled: nothing left to deliver again, from the declared stream or the delay stream.
            await Eventually.UntilAsync(
                async () =>
                {
                    await durable!.RefreshAsync();
                    var delays = await transport.JetStream.GetStreamAsync(Names.DelayStream(queue));
                    return durable.Info is { NumAckPending: 0, NumPending: 0 } && delays.Info.State.Messages == 0;
                },
                "every message settled",
                Timeout);
            var handled = seen.Single(e => e.MessageId == held.MessageId);
            Assert.Equal(2, handled.DeliveryAttempt);
            Assert.Equal(TextOf(held), TextOf(handled));
            Assert.Single(seen, e => e.MessageId == blocking.MessageId);
            Assert.Equal(0, await transport.DrainDeadLettersAsync(queue, (_, _) => throw new InvalidOperationException("a message held at the stops was dead-lettered")));

            // No copy was published to the declared stream; the other queue reading the same subjects got each once.
            Assert.Equal(2L, (await transport.JetStream.GetStreamAsync(stream)).Info.State.Messages);
            await Eventually.UntilAsync(() => otherSeen.Count >= 2, "the other queue handles both", Timeout);
            Assert.Single(otherSeen, e => e.MessageId == held.MessageId);
            Assert.Single(otherSeen, e => e.MessageId == blocking.MessageId);
        }
    }

    private void Configure(NatsTransportOptions o)
    {
        o.MaxDeliver = 2;
        o.AckWait = TimeSpan.FromSeconds(1);
    }

    /// <summary>Refuses every ping.</summary>
    public sealed class RefusingPingHandler : Herald.Handling.IMessageHandler<HostingTests.NatsPing>
    {
        /// <summary>Why it refuses.</summary>
        public const string Refusal = "the ping is refused";

        /// <inheritdoc />
        public ValueTask HandleAsync(HostingTests.NatsPing message, Herald.Handling.MessageContext context, CancellationToken cancellationToken) =>
            throw new InvalidOperationException(Refusal);
    }

    // A host of the endpoint, with MaxDeliver 2 (unless configureNats says otherwise), its handler and the rest as the test
    // configures them; logging to log, when given.
    private async Task<IHost> StartHostAsync(string endpoint, Action<HeraldBuilder> configure, Action<NatsTransportOptions>? configureNats = null, ILoggerProvider? log = null)
    {
        var builder = Host.CreateApplicationBuilder();
        builder.Logging.ClearProviders();
        if (log is not null)
        {
            builder.Logging.AddProvider(log);
        }

        builder.Services.AddSingleton(new HostingTests.Probe());
        builder.Services.AddHerald(h =>
        {
            h.UseNats(o =>
                {
                    o.Url = NatsServer.Url;
                    o.StreamPrefix = Prefixes.Streams;
                    o.SubjectPrefix = Prefixes.Subjects;
                    Configure(o);
                    configureNats?.Invoke(o);
                })
                .AddMessageType<HostingTests.NatsPing>("nats-ping")
                .Configure(o => o.EndpointName = endpoint);
            configure(h);
        });
        var host = builder.Build();
        await host.StartAsync();
        return host;
    }
}
