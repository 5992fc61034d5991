using Herald.Conformance;
using Herald.Handling;
using Herald.Messages;
using Herald.Redis.Internal;
using Herald.Reliability.DeadLetters;
using Herald.Reliability.Inbox;
using Microsoft.Extensions.DependencyInjection;
using StackExchange.Redis;

namespace Herald.Redis.Tests;

/// <summary>
/// Issue 10: a Redis inbox mark lost while its handler runs (here: deleted behind Herald's back) cancels the handler, and
/// the attempt's commit is refused, so the work is applied once, by the retry that marks the message anew.
/// </summary>
public sealed class LostInboxMarkTests(RedisFixture redis) : IClassFixture<RedisFixture>
{
    private readonly string _endpoint = "lost-mark-" + Guid.NewGuid().ToString("N")[..8];

    [Fact]
    public async Task AMarkLostWhileTheHandlerRuns_CancelsTheHandler_AndTheRetryAppliesTheWorkOnce_Issue10()
    {
        var script = new Script { WaitForCancellation = true };
        await using var host = await StartAsync(script);

        await host.Services.GetRequiredService<IMessageBus>().SendAsync(new Work("a"));
        await script.Entered.Task.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.True(await redis.Multiplexer.GetDatabase().KeyDeleteAsync(MarkKey(script.MessageId)));

        await Eventually.UntilAsync(() => script.Applied == 1, "the retry applies the work");
        Assert.True(script.FirstAttemptCancelled, "the handler's token fired when the mark was found lost");
        Assert.Equal(2, script.Attempts);
        Assert.True(await host.Services.GetRequiredService<IInbox>().IsHandledAsync(_endpoint, script.MessageId));
        Assert.Equal(0, await host.Services.GetRequiredService<IDeadLetterStore>().CountAsync(DeadLetterQuery.All));
        Assert.Equal(1, script.Applied);
    }

    [Fact]
    public async Task AMarkLostJustBeforeTheCommit_RefusesTheCommit_SoTheWorkIsNotAppliedTwice_Issue10()
    {
        var script = new Script { WaitForCancellation = false };
        await using var host = await StartAsync(script);

        await host.Services.GetRequiredService<IMessageBus>().SendAsync(new Work("b"));
        await script.Entered.Task.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.True(await redis.Multiplexer.GetDatabase().KeyDeleteAsync(MarkKey(script.MessageId)));
        script.Release.SetResult();

        await Eventually.UntilAsync(() => script.Attempts == 2 && script.Applied == 1, "the retry applies the work");
        Assert.True(await host.Services.GetRequiredService<IInbox>().IsHandledAsync(_endpoint, script.MessageId));
        Assert.Equal(1, script.Applied);
    }

    private async Task<RunningHost> StartAsync(Script script)
    {
        var builder = TestHost.CreateBuilder(h => h
            .Configure(o => o.EndpointName = _endpoint)
            .UseRedis(RedisFixture.Configuration, o =>
            {
                o.KeyPrefix = redis.KeyPrefix;
                o.InboxPendingTimeout = TimeSpan.FromMilliseconds(600);
            })
            .UseInbox()
            .AddMessageType<Work>()
            .AddHandler<WorkHandler>(ServiceLifetime.Singleton)
            .ConfigureRetries(r => r.Immediate(1).Delayed(0, TimeSpan.FromMilliseconds(10), TimeSpan.FromMilliseconds(10))));
        builder.Services.AddSingleton(script);
        var host = builder.Build();
        await host.StartAsync();
        return new RunningHost(host);
    }

    private RedisKey MarkKey(Guid id) => RedisKeys.Build(redis.KeyPrefix + "{inbox}:", _endpoint, ":" + id.ToString("N"));

    [MessageType("lost-mark-work")]
    public sealed record Work(string Name);

    public sealed class Script
    {
        private int _attempts;
        private int _applied;

        public bool WaitForCancellation { get; init; }

        public TaskCompletionSource Entered { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public TaskCompletionSource Release { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public Guid MessageId { get; set; }

        public bool FirstAttemptCancelled { get; set; }

        public int Attempts => Volatile.Read(ref _attempts);

        public int Applied => Volatile.Read(ref _applied);

        public int Attempt() => Interlocked.Increment(ref _attempts);

        public void Apply() => Interlocked.Increment(ref _applied);
    }

    public sealed class WorkHandler(Script script) : IMessageHandler<Work>
    {
        public async ValueTask HandleAsync(Work message, MessageContext context, CancellationToken cancellationToken)
        {
            // The work is applied only if this attempt's unit of work commits.
            context.UnitOfWork.OnCommitted(_ =>
            {
                script.Apply();
                return ValueTask.CompletedTask;
            });
            if (script.Attempt() > 1)
            {
                return;
            }

            script.MessageId = context.Envelope.MessageId;
            script.Entered.SetResult();
            if (!script.WaitForCancellation)
            {
                await script.Release.Task;
                return;
            }

            try
            {
                await Task.Delay(Timeout.InfiniteTimeSpan, cancellationToken);
            }
            catch (OperationCanceledException)
            {
                script.FirstAttemptCancelled = true;
                throw;
            }
        }
    }
}

/// <summary>Issue 10: an idempotency lock lost while its operation runs cancels the operation and stores no result.</summary>
public sealed class LostIdempotencyLockTests(RedisFixture redis) : IClassFixture<RedisFixture>
{
    [Fact]
    public async Task ALockDeletedWhileTheOperationRuns_CancelsIt_WithLeaseLost_AndTheNextCallerRunsItOnce_Issue10()
    {
        var builder = TestHost.CreateBuilder(h => h.UseRedis(RedisFixture.Configuration, o => o.KeyPrefix = redis.KeyPrefix));
        builder.Services.Configure<Herald.Reliability.Idempotency.IdempotencyOptions>(o => o.LockTimeout = TimeSpan.FromMilliseconds(600));
        var built = builder.Build();
        await built.StartAsync();
        await using var host = new RunningHost(built);
        var service = host.Services.GetRequiredService<Herald.Reliability.Idempotency.IdempotencyService>();
        var key = "charge-" + Guid.NewGuid().ToString("N");
        var entered = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var runs = 0;

        var first = service.ExecuteAsync(key, async ct =>
        {
            Interlocked.Increment(ref runs);
            entered.SetResult();
            await Task.Delay(Timeout.InfiniteTimeSpan, ct);
            return 1;
        }, TimeSpan.FromMinutes(5)).AsTask();
        await entered.Task.WaitAsync(TimeSpan.FromSeconds(10));
        Assert.True(await redis.Multiplexer.GetDatabase().KeyDeleteAsync(RedisKeys.Build(redis.KeyPrefix + "idempotency:", key)));

        await Assert.ThrowsAsync<Herald.Persistence.LeaseLostException>(() => first.WaitAsync(TimeSpan.FromSeconds(10)));
        Assert.Equal(2, await service.ExecuteAsync(key, _ => new ValueTask<int>(Interlocked.Increment(ref runs)), TimeSpan.FromMinutes(5)));
        Assert.Equal(2, await service.ExecuteAsync(key, _ => new ValueTask<int>(Interlocked.Increment(ref runs)), TimeSpan.FromMinutes(5)));
    }
}
