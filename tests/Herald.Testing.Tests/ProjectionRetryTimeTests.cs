using Herald.EventSourcing;
using Herald.Messages;
using Herald.Projections;
using Herald.Reliability.DeadLetters;
using Herald.Testing.Tests.Sample;
using Microsoft.Extensions.DependencyInjection;

namespace Herald.Testing.Tests;

/// <summary>An async projection whose event waits for a delayed retry on the fake clock, as a message waiting for its redelivery.</summary>
public sealed class ProjectionRetryTimeTests
{
    private static readonly TimeSpan RetryDelay = TimeSpan.FromMinutes(1);

    [Fact]
    public async Task AdvanceTime_StepsToAProjectionsDelayedRetry_WhichThenSucceeds()
    {
        var projection = new FlakyOrders(failures: 1);
        await using var harness = await StartAsync(projection);
        var start = harness.Time.GetUtcNow();
        var orderId = await AppendOrderAsync(harness);

        // The failed event waits for the clock: nothing more happens until the test moves it, so the host is idle.
        await harness.WaitForIdleAsync();
        Assert.Equal([start], projection.Attempts);
        Assert.Null(await harness.Services.GetRequiredService<ReadModels>().GetAsync(FlakyOrders.Orders, orderId.ToString("N")));

        await harness.AdvanceTimeAsync(TimeSpan.FromMinutes(10));

        // The retry ran at its own time, not at the end of the advance.
        Assert.Equal([start, start + RetryDelay], projection.Attempts);
        var summary = await harness.Services.GetRequiredService<ReadModels>().GetAsync(FlakyOrders.Orders, orderId.ToString("N"));
        Assert.NotNull(summary);
        Assert.Equal(0, (await harness.Services.GetRequiredService<ProjectionManager>().GetStatusAsync(FlakyOrders.ProjectionName)).Lag);
        await harness.DeadLettered.ExpectNoneAsync<OrderPlaced>();
    }

    [Fact]
    public async Task AdvanceTime_StepsThroughAProjectionsDelayedRetries_UntilItsEventIsDeadLettered()
    {
        var projection = new FlakyOrders(failures: int.MaxValue);
        await using var harness = await StartAsync(projection);
        var start = harness.Time.GetUtcNow();
        var orderId = await AppendOrderAsync(harness);

        await harness.WaitForIdleAsync();
        await harness.AdvanceTimeAsync(TimeSpan.FromMinutes(10));

        Assert.Equal([start, start + RetryDelay, start + (2 * RetryDelay)], projection.Attempts);
        var deadLettered = await harness.DeadLettered.ExpectAsync<OrderPlaced>(e => e.OrderId == orderId, TimeSpan.Zero);
        Assert.Equal(FlakyOrders.ProjectionName, deadLettered.DeadLetter.Endpoint);
        Assert.Equal(DeadLetterOrigin.Projection, deadLettered.DeadLetter.Origin);
        Assert.Equal(3, deadLettered.DeadLetter.AttemptCount);

        // The dead-lettered event no longer holds the projection: it caught up, and the host is idle.
        await harness.WaitForIdleAsync();
        Assert.Equal(0, (await harness.Services.GetRequiredService<ProjectionManager>().GetStatusAsync(FlakyOrders.ProjectionName)).Lag);
    }

    [Fact]
    public async Task ExpectNone_DoesNotWaitOutItsTimeoutForAProjectionWaitingForADelayedRetry()
    {
        var projection = new FlakyOrders(failures: 1);
        await using var harness = await StartAsync(projection);
        await AppendOrderAsync(harness);

        // It waits until the host is idle: with the failed event waiting for the clock, that is once the first attempt failed.
        await harness.DeadLettered.ExpectNoneAsync<OrderPlaced>();
        Assert.Single(projection.Attempts);
    }

    [Fact]
    public async Task AdvanceTime_StepsToTheRestartOfAProjectionsRunnerThatFailed()
    {
        // A runner that stopped on a failure starts again after ProjectionOptions.RetryInterval on the clock.
        var projection = new FlakyOrders(failures: 1, failure: () => new ReadModelGenerationRetiredException("flaky_orders", 1, 1));
        await using var harness = await StartAsync(projection);
        var start = harness.Time.GetUtcNow();
        var orderId = await AppendOrderAsync(harness);

        await harness.WaitForIdleAsync();
        await harness.AdvanceTimeAsync(TimeSpan.FromMinutes(10));

        Assert.Equal([start, start + new ProjectionOptions().RetryInterval], projection.Attempts);
        Assert.NotNull(await harness.Services.GetRequiredService<ReadModels>().GetAsync(FlakyOrders.Orders, orderId.ToString("N")));
    }

    private static Task<HeraldTestHarness> StartAsync(FlakyOrders projection) =>
        HeraldTestHarness.StartAsync(h => h.AddMessageType<OrderPlaced>().AddProjection(projection)
            .ConfigureRetries(FlakyOrders.ProjectionName, r => r.Immediate(0).Delayed(2, RetryDelay, RetryDelay)));

    private static async Task<Guid> AppendOrderAsync(HeraldTestHarness harness)
    {
        var orderId = Guid.NewGuid();
        var placed = harness.Services.GetRequiredService<EnvelopeFactory>().Create(new OrderPlaced(orderId, 25m));
        await harness.Services.GetRequiredService<IEventStore>().AppendAsync("order-" + orderId.ToString("N"), ExpectedVersion.NoStream, [placed]);
        return orderId;
    }

    private sealed record OrderSummary(Guid OrderId, decimal Amount);

    /// <summary>Throws (<c>failure</c>, else an invalid operation) for its first <c>failures</c> attempts, noting the fake clock's time of each attempt.</summary>
    private sealed class FlakyOrders : Projection
    {
        public const string ProjectionName = "flaky-orders";
        public static readonly ReadModelTable<OrderSummary> Orders = new("flaky_orders");
        private readonly List<DateTimeOffset> _attempts = [];

        public FlakyOrders(int failures, Func<Exception>? failure = null)
            : base(ProjectionName)
        {
            Table(Orders);
            On<OrderPlaced>(async (e, context, cancellationToken) =>
            {
                int attempt;
                lock (_attempts)
                {
                    _attempts.Add(context.Services.GetRequiredService<TimeProvider>().GetUtcNow());
                    attempt = _attempts.Count;
                }

                if (attempt <= failures)
                {
                    throw failure?.Invoke() ?? new InvalidOperationException($"Attempt {attempt} fails.");
                }

                await context.UpsertAsync(Orders, e.OrderId.ToString("N"), new OrderSummary(e.OrderId, e.Amount));
            });
        }

        public IReadOnlyList<DateTimeOffset> Attempts
        {
            get
            {
                lock (_attempts)
                {
                    return [.. _attempts];
                }
            }
        }
    }
}
