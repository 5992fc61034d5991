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
        var builder = Host.CreateApplicationBuilder();
        builder.Services.AddSingleton(probe);
        builder.Services.AddHerald(h => h
            .UseRabbitMq(o =>
            {
                o.ConnectionUri = BrokerAdmin.AmqpUri;
                o.ClientProvidedName = Prefix;
            })
            .AddMessageType<SlowPing>(Name("slow"))
            .AddHandler<SlowPingHandler>()
            .Configure(o =>
            {
                o.EndpointName = endpoint;
                o.MaxConcurrency = 1;
                o.Prefetch = 4; // acks unbatched (prefetch / 4 = 1)
                o.ShutdownTimeout = TimeSpan.FromMilliseconds(200);
            }));
        using var host = builder.Build();
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
