using Herald.Conformance;
using Herald.Handling;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;

namespace Herald.RabbitMQ.Tests;

/// <summary>
/// A handler that finishes after the host's shutdown deadline has done its work: its ack must reach the broker before the
/// channel closes. It was dropped (the pipeline settled with the handler's cancelled token, and the client does not write
/// a frame for a cancelled call), so the broker requeued a handled message.
/// </summary>
public sealed class ShutdownAckTests : RabbitMqTestBase
{
    // The channel is still open when the handler finishes (StopAsync waits for it). Unbatched acks (prefetch 4) are where
    // the cancelled token lost the ack: batched ones failed before taking the tags, so the stop's final flush sent them.
    [Fact]
    public async Task HandlerFinishingAfterTheShutdownDeadline_IsAckedNotHandedBack()
    {
        var probe = new SlowProbe();
        var endpoint = Name("endpoint");
        using var host = BuildHost<SlowPing, SlowPingHandler>(probe, endpoint, prefetch: 4); // acks unbatched (prefetch / 4 = 1)
        await host.StartAsync();
        await host.Services.GetRequiredService<IMessageBus>().PublishAsync(new SlowPing("once"));
        await probe.Started.Task.WaitAsync(TimeSpan.FromSeconds(15));
        await host.StopAsync();
        Assert.Equal(1, probe.Finished);

        // The handler returned normally: the message must not be waiting in the queue to be handled again.
        var channel = await CreateRawChannelAsync();
        var back = await channel.BasicGetAsync(endpoint, autoAck: true);
        Assert.True(back is null, $"the handled message is back in '{endpoint}' (redelivered: {back?.Redelivered}), to be handled a second time");
    }

    // Regression (audit, round 8): with a handler that ignores its token, HeraldOptions.ShutdownTimeout 200 ms and the
    // host's 1 s, the host's stop returned when the handler did (20 s in the audit's run). The stop now abandons it a
    // grace after its token fired; the closed channel hands its delivery back, and its end settles nothing.
    [Fact]
    public async Task HandlerIgnoringItsCancellation_IsAbandonedByTheStop_AndItsMessageStaysInTheQueue()
    {
        var probe = new StubbornProbe();
        var endpoint = Name("endpoint");
        var host = BuildHost<StubbornPing, StubbornPingHandler>(probe, endpoint, prefetch: null);
        try
        {
            await host.StartAsync();
            await host.Services.GetRequiredService<IMessageBus>().PublishAsync(new StubbornPing("once"));
            await probe.Started.Task.WaitAsync(TimeSpan.FromSeconds(15));

            var stopwatch = System.Diagnostics.Stopwatch.StartNew();
            await host.StopAsync().WaitAsync(TimeSpan.FromSeconds(15));
            Assert.InRange(stopwatch.Elapsed, TimeSpan.Zero, TimeSpan.FromMilliseconds(200) + Herald.Internal.ConsumerStop.AbandonGrace + TimeSpan.FromSeconds(3));

            // The handler ends after the stop returned: its ack must not go, and the message is there to be handled again.
            probe.Release.TrySetResult();
            await probe.Finished.Task.WaitAsync(TimeSpan.FromSeconds(15));
            await ((IAsyncDisposable)host).DisposeAsync().AsTask().WaitAsync(TimeSpan.FromSeconds(15));
            var channel = await CreateRawChannelAsync();
            var back = await Eventually.ValueAsync(() => new ValueTask<global::RabbitMQ.Client.BasicGetResult?>(channel.BasicGetAsync(endpoint, autoAck: true)), "the abandoned message back in the queue");
            Assert.True(back.Redelivered);
        }
        finally
        {
            probe.Release.TrySetResult();
            host.Dispose();
        }
    }

    public sealed record StubbornPing(string Text);

    public sealed class StubbornProbe
    {
        public TaskCompletionSource Started { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public TaskCompletionSource Release { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public TaskCompletionSource Finished { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);
    }

    public sealed class StubbornPingHandler(StubbornProbe probe) : IMessageHandler<StubbornPing>
    {
        public async ValueTask HandleAsync(StubbornPing message, MessageContext context, CancellationToken cancellationToken)
        {
            probe.Started.TrySetResult();
            // Ignores its token: runs on until the test lets it go.
            await probe.Release.Task.WaitAsync(TimeSpan.FromSeconds(30), CancellationToken.None);
            probe.Finished.TrySetResult();
        }
    }

    // One consumer with HeraldOptions.ShutdownTimeout 200 ms and the host's own 1 s, as in the audit's reproduction.
    private IHost BuildHost<TMessage, THandler>(object probe, string endpoint, int? prefetch)
        where TMessage : class
        where THandler : class, IMessageHandler<TMessage>
    {
        var builder = Host.CreateApplicationBuilder();
        builder.Services.AddSingleton(probe.GetType(), probe);
        builder.Services.Configure<HostOptions>(o => o.ShutdownTimeout = TimeSpan.FromSeconds(1));
        builder.Services.AddHerald(h => h
            .UseRabbitMq(o =>
            {
                o.ConnectionUri = BrokerAdmin.AmqpUri;
                o.ClientProvidedName = Prefix;
            })
            .AddMessageType<TMessage>(Name(typeof(TMessage).Name))
            .AddHandler<THandler>()
            .Configure(o =>
            {
                o.EndpointName = endpoint;
                o.MaxConcurrency = 1;
                o.Prefetch = prefetch ?? o.Prefetch;
                o.ShutdownTimeout = TimeSpan.FromMilliseconds(200);
            }));
        return builder.Build();
    }

    public sealed record SlowPing(string Text);

    public sealed class SlowProbe
    {
        public TaskCompletionSource Started { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public int Finished;
    }

    public sealed class SlowPingHandler(SlowProbe probe) : IMessageHandler<SlowPing>
    {
        public async ValueTask HandleAsync(SlowPing message, MessageContext context, CancellationToken cancellationToken)
        {
            probe.Started.TrySetResult();
            // Work that outlives the shutdown deadline: it finishes once its token has fired.
            var deadline = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            await using (cancellationToken.Register(() => deadline.TrySetResult()))
            {
                await deadline.Task.WaitAsync(TimeSpan.FromSeconds(30), CancellationToken.None);
            }

            Interlocked.Increment(ref probe.Finished);
        }
    }
}
