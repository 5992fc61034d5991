using Herald.Conformance;
using Herald.Handling;
using Herald.Internal;
using Herald.Nats.Transport;
using Herald.Transport;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Diagnostics.HealthChecks;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;
using NATS.Client.JetStream.Models;

namespace Herald.Nats.Tests;

/// <summary>Whether a NATS consumer whose consume loop ends on its own says so (to the host's log and health check), and what it does when what it reads is deleted.</summary>
public sealed class ConsumerLivenessTests : NatsTestBase
{
    /// <summary>
    /// Stop 43: a mapped queue's stream owned by an operator (not declared in Streams, so Herald never makes it) deleted while
    /// the endpoint consumed: the pull tried to make its durable again once a second for ever, logging a warning each time,
    /// while nothing was consumed and the transport check kept reporting Healthy. The server's refusal now ends the consumer,
    /// and the host reports it (1003) as the other transports' consumers do.
    /// </summary>
    [Fact]
    public async Task AMappedQueuesOperatorStream_DeletedWhileTheHostConsumes_MakesTheTransportCheckUnhealthy_NamingTheQueue()
    {
        var stream = Prefixes.Streams + "_OPERATOR";
        var subject = Prefixes.Subjects + ".operator.pings";
        var endpoint = "operator-reader";
        var (connection, js) = await NatsServer.ConnectAsync();
        await using var _ = connection;
        await js.CreateStreamAsync(new StreamConfig(stream, [Prefixes.Subjects + ".operator.>"]));

        var log = new TestOutputLogger();
        using var host = BuildHost(log, endpoint, o =>
        {
            o.Queues[endpoint] = new NatsQueueOptions { Stream = stream, FilterSubject = subject };
            o.Topics["liveness-ping"] = subject;
        });
        await host.StartAsync();
        try
        {
            var health = host.Services.GetRequiredService<HealthCheckService>();
            Assert.Equal(HealthStatus.Healthy, (await health.CheckHealthAsync()).Entries["herald-transport"].Status);
            var reported = log.WhenLoggedAsync("stopped without being asked to");

            await js.DeleteStreamAsync(stream);

            var report = await Eventually.ValueAsync<HealthReport>(
                async () =>
                {
                    // Not only Unhealthy: the transport probe finds the queue's stream gone too, and says so meanwhile.
                    var r = await health.CheckHealthAsync();
                    return r.Entries["herald-transport"] is { Status: HealthStatus.Unhealthy, Description: { } d } && d.Contains("stopped without being asked to", StringComparison.Ordinal) ? r : null;
                },
                "the transport check reports the consumer that stopped on its own",
                Timeout);
            var entry = report.Entries["herald-transport"];
            Assert.True(entry.Description!.Contains($"The consumer of '{endpoint}' stopped without being asked to", StringComparison.Ordinal), entry.Description);
            Assert.IsType<HeraldException>(entry.Exception);
            Assert.Contains(stream, entry.Exception!.Message, StringComparison.Ordinal);
            await reported.WaitAsync(Timeout);
        }
        finally
        {
            await host.StopAsync();
        }
    }

    /// <summary>A host stopping its consumer is not a consumer that stopped on its own: nothing is reported.</summary>
    [Fact]
    public async Task AHostStop_IsNotReportedAsAConsumerThatStoppedOnItsOwn()
    {
        var log = new TestOutputLogger();
        using var host = BuildHost(log, "stopped-reader");
        await host.StartAsync();
        await host.StopAsync();

        var status = host.Services.GetRequiredService<EndpointConsumerStatus>();
        Assert.False(status.TryGetFault(out var queue, out var reason), $"reported {queue}: {reason}");
        Assert.DoesNotContain("stopped without being asked to", log.ToString(), StringComparison.Ordinal);
    }

    /// <summary>The consumer's completion: successful after a stop, so the host's watch has nothing to report.</summary>
    [Fact]
    public async Task Stop_CompletesTheConsumersCompletion_Successfully()
    {
        var transport = await CreateTransportAsync();
        var queue = "completed-" + Guid.NewGuid().ToString("N")[..8];
        var (consumer, _) = await ConsumeAsync(transport, queue);
        var completion = Assert.IsAssignableFrom<IConsumerCompletion>(consumer).Completion;
        Assert.False(completion.IsCompleted);

        await consumer.StopAsync();

        await completion.WaitAsync(Timeout);
        Assert.True(completion.IsCompletedSuccessfully);
        await consumer.DisposeAsync();
    }

    /// <summary>
    /// Stop 43: a stream declared in Streams (Herald made it at the start) deleted while a mapped queue consumed it: the pull
    /// found its durable gone and tried to make it again once a second for ever, failing on the stream, so nothing sent to
    /// the queue was handled again until a restart. The stream is declared again, then its durable, as at the start.
    /// </summary>
    [Fact]
    public async Task ADeclaredStream_DeletedWhileAMappedQueueConsumes_IsDeclaredAgain_AndWhatIsSentAfterIsHandled()
    {
        var stream = Prefixes.Streams + "_DECLARED";
        var subject = Prefixes.Subjects + ".declared";
        var queue = "declared-reader";
        var transport = await CreateTransportAsync(
            o =>
            {
                var declared = new NatsStreamOptions { Name = stream };
                declared.Subjects.Add(subject);
                o.Streams.Add(declared);
                o.Queues[queue] = new NatsQueueOptions { Stream = stream, FilterSubject = subject };
                o.PublishRetryTimeout = TimeSpan.Zero;
            });
        var (consumer, seen) = await ConsumeAsync(transport, queue);
        await using (consumer)
        {
            await transport.SendAsync(queue, NewEnvelope("before"));
            await Eventually.UntilAsync(() => seen.Any(e => TextOf(e) == "before"), "the message sent before the delete");

            await transport.JetStream.DeleteStreamAsync(stream);

            await Eventually.UntilAsync(
                async () =>
                {
                    try
                    {
                        await transport.SendAsync(queue, NewEnvelope("after"));
                        return true;
                    }
                    catch (HeraldException)
                    {
                        return false;
                    }
                },
                "a send is stored in the stream declared again",
                Timeout);
            await Eventually.UntilAsync(() => seen.Any(e => TextOf(e) == "after"), "the running consumer handles a message sent after the stream was declared again", Timeout);
        }
    }

    /// <summary>
    /// Stop 48: a queue's stream deleted (by an operator, on another connection) under a waiting pull. The server answers the
    /// pull "409 Consumer Deleted" while it still deletes the stream; the pull made the stream again at once, and NATS 2.9.10
    /// made it in the directory the delete then removed: the new stream counted each message sent after and delivered none
    /// (the server logs "open .../msgs/1.blk: no such file or directory"), about one delete in two. Five deletes in a row.
    /// </summary>
    [Fact]
    public async Task AQueuesStream_DeletedUnderAWaitingPull_IsMadeAgainOnceTheDeleteIsOver_AndWhatIsSentAfterIsHandled()
    {
        var queue = "deleted-under-pull";
        var transport = await CreateTransportAsync(o => o.PublishRetryTimeout = TimeSpan.FromSeconds(1));
        var (operatorConnection, js) = await NatsServer.ConnectAsync();
        await using var _ = operatorConnection;
        var (consumer, seen) = await ConsumeAsync(transport, queue);
        await using (consumer)
        {
            for (var round = 0; round < 5; round++)
            {
                var stream = Names.QueueStream(queue);
                await Eventually.UntilAsync(
                    async () =>
                    {
                        try
                        {
                            return (await js.GetConsumerAsync(stream, NatsNames.Durable(queue))).Info.NumWaiting > 0;
                        }
                        catch (NATS.Client.JetStream.NatsJSApiException)
                        {
                            return false;
                        }
                    },
                    $"round {round}: a pull waits on the durable",
                    Timeout);
                await js.DeleteStreamAsync(stream);

                var text = $"after-delete-{round}";
                await Eventually.UntilAsync(
                    async () =>
                    {
                        try
                        {
                            await transport.SendAsync(queue, NewEnvelope(text));
                            return true;
                        }
                        catch (HeraldException)
                        {
                            return false;
                        }
                    },
                    $"round {round}: a send is stored in the stream made again",
                    Timeout);
                await Eventually.UntilAsync(() => seen.Any(e => TextOf(e) == text), $"round {round}: the running consumer handles a message sent after its stream was deleted", Timeout);
            }
        }
    }

    /// <summary>
    /// Stop 43: a queue's durable that an operator made again as a push consumer (a deliver subject set) refuses every pull
    /// ("409 Consumer is push based"); the pull asked again once a second for ever, consuming nothing, and the consumer was
    /// never reported stopped. Asking again cannot change that answer: the pull ends and the consumer's completion says why.
    /// The pull is held (its handler holding the first message, the lane full, the receive waiting) while the durable is
    /// deleted and made again: a free pull sees the delete at once and makes the durable again itself, as it should, and the
    /// push consumer made after that was refused ("max waiting can not be updated", once in a whole-project run).
    /// </summary>
    [Fact]
    public async Task ADurableMadeAgainAsAPushConsumer_EndsThePull_AndTheCompletionReportsIt()
    {
        var transport = await CreateTransportAsync();
        var queue = "pushed-" + Guid.NewGuid().ToString("N")[..8];
        var held = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var release = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var (consumer, seen) = await ConsumeAsync(
            transport,
            queue,
            async (delivery, _) =>
            {
                if (TextOf(delivery.Envelope) == "held")
                {
                    held.TrySetResult();
                    await release.Task;
                }
            },
            new ConsumerOptions { MaxConcurrency = 1, Prefetch = 1 });
        await using (consumer)
        {
            var stream = Names.QueueStream(queue);
            var durable = NatsNames.Durable(queue);
            await transport.SendAsync(queue, NewEnvelope("before"));
            await Eventually.UntilAsync(() => seen.Any(e => TextOf(e) == "before"), "the message sent before the durable is made again");
            var completion = Assert.IsAssignableFrom<IConsumerCompletion>(consumer).Completion;

            // The handler holds the first, the lane takes the second, the pull waits to hand over the third: it reads the
            // server's answer to the delete only after those, once the push consumer is there.
            foreach (var text in (string[])["held", "laned", "waiting"])
            {
                await transport.SendAsync(queue, NewEnvelope(text));
            }

            await held.Task.WaitAsync(Timeout);
            await Eventually.UntilAsync(
                async () => (await transport.JetStream.GetConsumerAsync(stream, durable)).Info.NumAckPending >= 3,
                "the server delivered the three messages to the held pull",
                Timeout);

            await transport.JetStream.DeleteConsumerAsync(stream, durable);
            await transport.JetStream.CreateOrUpdateConsumerAsync(stream, new ConsumerConfig(durable)
            {
                DeliverSubject = Prefixes.Subjects + ".pushed",
                AckPolicy = ConsumerConfigAckPolicy.Explicit,
            });
            release.TrySetResult();

            var failure = await Assert.ThrowsAsync<HeraldException>(() => completion.WaitAsync(Timeout));
            Assert.Contains(durable, failure.Message, StringComparison.Ordinal);
            Assert.Contains("push", failure.Message, StringComparison.OrdinalIgnoreCase);
        }
    }

    /// <summary>A host consuming <paramref name="endpoint"/> on the test server, with the health checks, logging to <paramref name="log"/>.</summary>
    private IHost BuildHost(TestOutputLogger log, string endpoint, Action<NatsTransportOptions>? configure = null)
    {
        var builder = Host.CreateApplicationBuilder();
        builder.Logging.ClearProviders();
        builder.Logging.AddProvider(log);
        builder.Services.AddSingleton(new HostingTests.Probe());
        builder.Services.AddHerald(h => h
            .UseNats(o =>
            {
                o.Url = NatsServer.Url;
                o.StreamPrefix = Prefixes.Streams;
                o.SubjectPrefix = Prefixes.Subjects;
                configure?.Invoke(o);
            })
            .AddMessageType<HostingTests.NatsPing>("liveness-ping")
            .AddHandler<HostingTests.NatsPingHandler>()
            .Configure(o => o.EndpointName = endpoint));
        builder.Services.AddHealthChecks().AddHerald();
        return builder.Build();
    }
}
