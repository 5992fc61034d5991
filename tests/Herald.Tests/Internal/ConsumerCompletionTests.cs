using System.Collections.Concurrent;
using Herald.Handling;
using Herald.Internal;
using Herald.Messages;
using Herald.Transport;
using Herald.Transport.InMemory;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace Herald.Tests.Internal;

/// <summary>A consumer tells the host when its loop ended: a fault when it ended on its own, success when it was stopped.</summary>
public sealed class ConsumerCompletionTests
{
    private static readonly TimeSpan Deadline = TimeSpan.FromSeconds(15);

    [Fact]
    public async Task LoopThatEndsWithoutAStop_Faults()
    {
        using var stopping = new CancellationTokenSource();

        var completion = ConsumerCompletion.WhenEndedAsync(Task.CompletedTask, stopping.Token);

        var error = await Assert.ThrowsAsync<InvalidOperationException>(() => completion.WaitAsync(Deadline));
        Assert.Contains("without being stopped", error.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task LoopThatFails_FaultsWithTheReasonItGives_OrItsOwnException()
    {
        using var stopping = new CancellationTokenSource();
        var reason = new NotSupportedException("logged by the loop");

        await Assert.ThrowsAsync<NotSupportedException>(() => ConsumerCompletion.WhenEndedAsync(Task.CompletedTask, stopping.Token, () => reason).WaitAsync(Deadline));
        await Assert.ThrowsAsync<FormatException>(() => ConsumerCompletion.WhenEndedAsync(Task.FromException(new FormatException()), stopping.Token).WaitAsync(Deadline));
    }

    [Fact]
    public async Task LoopEndedByAStop_CompletesWithoutAFault_EvenWhenItThrewAsItStopped()
    {
        using var stopping = new CancellationTokenSource();
        var loop = new TaskCompletionSource();
        var completion = ConsumerCompletion.WhenEndedAsync(loop.Task, stopping.Token);

        await stopping.CancelAsync();
        loop.SetException(new OperationCanceledException());

        await completion.WaitAsync(Deadline);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(4)]
    public async Task InMemoryConsumer_StoppedByItsOwner_CompletesWithoutAFault(int concurrency)
    {
        await using var transport = new InMemoryTransport();
        await transport.DeclareQueueAsync("completion");
        var consumer = await transport.ConsumeAsync("completion", new ConsumerOptions { MaxConcurrency = concurrency, Prefetch = concurrency }, (_, _) => ValueTask.CompletedTask);
        var completion = Assert.IsAssignableFrom<IConsumerCompletion>(consumer).Completion;
        Assert.False(completion.IsCompleted);

        await consumer.StopAsync();

        await completion.WaitAsync(Deadline);
        Assert.True(completion.IsCompletedSuccessfully);
    }

    [Fact]
    public async Task Host_StoppedNormally_ReportsNoStoppedConsumer()
    {
        var builder = Host.CreateApplicationBuilder();
        builder.Logging.ClearProviders();
        builder.Services.AddHerald(h => h
            .AddHandler<PingHandler>()
            .Configure(o => o.EndpointName = "completion-" + Guid.NewGuid().ToString("N")[..6]));
        using var host = builder.Build();
        await host.StartAsync();
        var status = host.Services.GetRequiredService<EndpointConsumerStatus>();
        Assert.False(status.TryGetFault(out _, out _));

        await host.StopAsync();

        Assert.False(status.TryGetFault(out _, out _));
    }

    [MessageType("completion-ping")]
    public sealed record Ping;

    public sealed class PingHandler : IMessageHandler<Ping>
    {
        public ValueTask HandleAsync(Ping message, MessageContext context, CancellationToken cancellationToken) => ValueTask.CompletedTask;
    }
}
