using System.Collections.Concurrent;
using Herald.Conformance;
using Herald.Conformance.Transport;
using Herald.Handling;
using Herald.Internal;
using Herald.Messages;
using Herald.Tests.Reliability;
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
    public async Task LoopEndedByAStop_CompletesWithoutAFault_EvenWhenItThrewAsItStopped() =>
        await (await CompletionOfALoopThatThrowsWhileStoppingAsync(new OperationCanceledException())).WaitAsync(Deadline);

    // The stop came after the loop had ended (here: between the loop's end and the completion's look at it), so the loop
    // ended on its own: reported as a successful stop, its failure showed only in the loop's own logs.
    [Fact]
    public async Task LoopThatFailedOnItsOwn_JustBeforeAStop_StillFaultsWithItsException()
    {
        using var stopping = new CancellationTokenSource();
        var loop = new TaskCompletionSource();
        StopRightAfter(loop.Task, stopping);
        var completion = ConsumerCompletion.WhenEndedAsync(loop.Task, stopping.Token);

        loop.SetException(new FormatException("the loop's own failure"));

        Assert.True(stopping.IsCancellationRequested);
        await Assert.ThrowsAsync<FormatException>(() => completion.WaitAsync(Deadline));
    }

    [Fact]
    public async Task LoopThatEndedOnItsOwn_JustBeforeAStop_StillFaultsWithTheReasonItGives()
    {
        using var stopping = new CancellationTokenSource();
        var loop = new TaskCompletionSource();
        var reason = new NotSupportedException("logged by the loop");
        StopRightAfter(loop.Task, stopping);
        var completion = ConsumerCompletion.WhenEndedAsync(loop.Task, stopping.Token, () => reason);

        loop.SetResult();

        Assert.True(stopping.IsCancellationRequested);
        Assert.Same(reason, await Assert.ThrowsAsync<NotSupportedException>(() => completion.WaitAsync(Deadline)));
    }

    // Only the stop's own cancellation is a stop: a loop failing otherwise while it stops failed.
    [Fact]
    public async Task LoopThatFailsWhileStopping_WithAnythingButACancellation_Faults()
    {
        var completion = await CompletionOfALoopThatThrowsWhileStoppingAsync(new FormatException("failed as it stopped"));

        await Assert.ThrowsAsync<FormatException>(() => completion.WaitAsync(Deadline));
    }

    private static async Task<Task> CompletionOfALoopThatThrowsWhileStoppingAsync(Exception exception)
    {
        using var stopping = new CancellationTokenSource();
        var loop = new TaskCompletionSource();
        var completion = ConsumerCompletion.WhenEndedAsync(loop.Task, stopping.Token);

        await stopping.CancelAsync();
        loop.SetException(exception);
        return completion;
    }

    /// <summary>Cancels <paramref name="stopping"/> as soon as <paramref name="loop"/> ends, before anything registered later sees the end.</summary>
    private static void StopRightAfter(Task loop, CancellationTokenSource stopping) =>
        _ = loop.ContinueWith(static (_, s) => ((CancellationTokenSource)s!).Cancel(), stopping, CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);

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

    // A consumer whose loop died is reported dead (health, log) when it dies. The host's stop then stops it like any other:
    // it neither throws that old failure at the application's shutdown nor skips the consumer's own clean-up (closing its
    // channel, handing prefetched messages back), which a throw out of ConsumerStop's wait left undone.
    [Fact]
    public async Task Host_WhoseConsumerDied_StopsWithoutThrowing_AndTheConsumerFinishesItsStop()
    {
        var transport = new DyingTransport(new InMemoryTransport());
        using var host = await StartHostAsync(transport);
        var status = host.Services.GetRequiredService<EndpointConsumerStatus>();
        var consumer = Assert.Single(transport.Consumers);

        consumer.Die(new NotSupportedException("the broker refused the consumer"));
        await Eventually.UntilAsync(() => status.TryGetFault(out _, out _), "the dead consumer is reported");

        await host.StopAsync().WaitAsync(Deadline);

        Assert.True(consumer.Finished, "the consumer's stop went on past its wait for the dead loop");
        Assert.True(status.TryGetFault(out _, out var reason));
        Assert.IsType<NotSupportedException>(reason);
    }

    // A loop that fails as the host's stop begins (a final commit or close that meets a gone broker) faults its Completion,
    // but the consumer was the stop's by then, and the host logged nothing of it. Logged (1004) before the stop's own 1002;
    // the health check is left alone, as the endpoint is stopping anyway.
    [Fact]
    public async Task Host_WhoseConsumerFailsAsItsStopBegins_LogsTheFailure_WithoutReportingTheEndpointUnhealthy()
    {
        var transport = new DyingTransport(new InMemoryTransport()) { FailOnStop = new NotSupportedException("the final commit met a gone broker") };
        var logs = new LogCollector();
        using var host = await StartHostAsync(transport, logs);
        var status = host.Services.GetRequiredService<EndpointConsumerStatus>();

        await host.StopAsync().WaitAsync(Deadline);

        var herald = logs.Entries.Where(e => e.Category == "Herald").ToList();
        var failed = herald.FindIndex(e => e.EventId == 1004);
        Assert.True(failed >= 0, "no failure logged; Herald logged: " + string.Join(", ", herald.Select(e => e.EventId)));
        Assert.IsType<NotSupportedException>(herald[failed].Exception);
        Assert.True(failed < herald.FindIndex(e => e.EventId == 1002), "the failure is logged before the endpoint's stop");
        Assert.DoesNotContain(herald, e => e.EventId == 1003);
        Assert.False(status.TryGetFault(out _, out _));
    }

    private static async Task<IHost> StartHostAsync(DyingTransport transport, ILoggerProvider? logs = null)
    {
        var builder = Host.CreateApplicationBuilder();
        builder.Logging.ClearProviders();
        if (logs is not null)
        {
            builder.Logging.AddProvider(logs);
        }

        builder.Services.AddHerald(h => h
            .UseTransport(_ => transport)
            .AddHandler<PingHandler>()
            .Configure(o => o.EndpointName = "completion-" + Guid.NewGuid().ToString("N")[..6]));
        var host = builder.Build();
        await host.StartAsync();
        return host;
    }

    [MessageType("completion-ping")]
    public sealed record Ping;

    public sealed class PingHandler : IMessageHandler<Ping>
    {
        public ValueTask HandleAsync(Ping message, MessageContext context, CancellationToken cancellationToken) => ValueTask.CompletedTask;
    }

    private sealed class DyingTransport(ITransport inner) : DelegatingTransport(inner)
    {
        public ConcurrentQueue<DyingConsumer> Consumers { get; } = new();

        /// <summary>What every consumer's loop fails with as its stop begins; null for a loop that stops cleanly.</summary>
        public Exception? FailOnStop { get; init; }

        public override ValueTask<ITransportConsumer> ConsumeAsync(string queue, ConsumerOptions options, DeliveryHandler handler, CancellationToken cancellationToken = default)
        {
            var consumer = new DyingConsumer(queue, FailOnStop);
            Consumers.Enqueue(consumer);
            return ValueTask.FromResult<ITransportConsumer>(consumer);
        }
    }

    // A consumer built as every transport's is: its loop's end is its Completion, and its stop waits on the loop through ConsumerStop.
    private sealed class DyingConsumer : ITransportConsumer, IConsumerCompletion
    {
        private readonly TaskCompletionSource _loop = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private readonly CancellationTokenSource _stopping = new();
        private readonly CancellationTokenSource _aborting = new();

        private readonly Exception? _failOnStop;

        public DyingConsumer(string queue, Exception? failOnStop)
        {
            Queue = queue;
            _failOnStop = failOnStop;
            Completion = ConsumerCompletion.WhenEndedAsync(_loop.Task, _stopping.Token);
        }

        public string Queue { get; }

        public Task Completion { get; }

        public bool Finished { get; private set; }

        public void Die(Exception reason) => _loop.SetException(reason);

        public async Task StopAsync(CancellationToken cancellationToken = default)
        {
            await _stopping.CancelAsync();
            if (_failOnStop is not null)
            {
                _loop.TrySetException(_failOnStop);
            }

            await ConsumerStop.WaitAsync(_loop.Task, _aborting, TimeProvider.System, cancellationToken);
            Finished = true;
        }

        public ValueTask DisposeAsync()
        {
            _stopping.Dispose();
            _aborting.Dispose();
            return ValueTask.CompletedTask;
        }
    }
}
