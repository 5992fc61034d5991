using System.Threading.Channels;
using Herald.Conformance;
using Herald.Persistence;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Time.Testing;

namespace Herald.Tests.Persistence;

/// <summary>The loop the core's background services run their work in (<see cref="LeaderElectionExtensions.RunWhileLeadingAsync"/>).</summary>
public sealed class LeaderElectionLoopTests
{
    private static readonly TimeSpan RetryInterval = TimeSpan.FromMilliseconds(10);

    [Fact]
    public async Task RunWhileLeading_RunsOneContendersWork_AndAnotherTakesOverWhenTheLeaderStops()
    {
        var election = new InProcessLeaderElection();
        const string Resource = "job";
        await using var first = Worker.Start(election, Resource);
        await first.Started.WaitAsync(Eventually.DefaultTimeout);
        await using var second = Worker.Start(election, Resource);

        // The first holds the lease, so the second cannot have started.
        Assert.Null(await election.TryAcquireAsync(Resource));
        Assert.False(second.Started.IsCompleted);

        await first.StopAsync();

        await second.Started.WaitAsync(Eventually.DefaultTimeout);
        Assert.True(first.WorkToken.IsCancellationRequested);
    }

    [Fact]
    public async Task RunWhileLeading_WhenTheLeaseIsLost_CancelsTheWork_ReleasesTheLease_AndLeadsAgain()
    {
        var election = new ScriptedElection();
        var starts = 0;
        var restarted = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var tokens = new List<CancellationToken>();
        using var stopping = new CancellationTokenSource();
        var loop = election.RunWhileLeadingAsync(
            "job",
            async token =>
            {
                tokens.Add(token);
                if (Interlocked.Increment(ref starts) == 2)
                {
                    restarted.SetResult();
                }

                await Task.Delay(Timeout.Infinite, token);
            },
            RetryInterval,
            TimeProvider.System,
            NullLogger.Instance,
            stopping.Token);
        var lease = Assert.IsType<ScriptedElection.Lease>(await election.NextTryAsync());

        lease.Lose();

        await restarted.Task.WaitAsync(Eventually.DefaultTimeout);
        Assert.True(tokens[0].IsCancellationRequested);
        Assert.False(tokens[1].IsCancellationRequested);
        Assert.True(lease.Released);
        await stopping.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => loop);
    }

    [Fact]
    public async Task RunWhileLeading_WhenTheElectionFails_TriesAgain()
    {
        var election = new ScriptedElection { FailNext = new InvalidOperationException("database unreachable") };
        await using var worker = Worker.Start(election, "job");

        Assert.Null(await election.NextTryAsync());
        await worker.Started.WaitAsync(Eventually.DefaultTimeout);
        Assert.NotNull(await election.NextTryAsync());
    }

    [Fact]
    public async Task RunWhileLeading_WhenTheWorkThrows_ReleasesTheLease_AndRunsItAgain_InsteadOfEndingTheLoop_Issue10()
    {
        var election = new ScriptedElection();
        var starts = 0;
        var again = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        using var stopping = new CancellationTokenSource();
        var loop = election.RunWhileLeadingAsync(
            "job",
            async token =>
            {
                if (Interlocked.Increment(ref starts) == 1)
                {
                    throw new InvalidOperationException("the database restarted under the work");
                }

                again.SetResult();
                await Task.Delay(Timeout.Infinite, token);
            },
            RetryInterval,
            TimeProvider.System,
            NullLogger.Instance,
            stopping.Token);
        var first = Assert.IsType<ScriptedElection.Lease>(await election.NextTryAsync());

        await again.Task.WaitAsync(Eventually.DefaultTimeout);
        Assert.True(first.Released);
        Assert.False(loop.IsCompleted);
        await stopping.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => loop);
    }

    /// <summary>
    /// A backend that reports each lease lost right after granting it: the loop waits the retry interval before it tries
    /// again, as after a failed try. Regression: it tried again at once, so the loop spun (and logged 1021) without a pause.
    /// </summary>
    [Fact]
    public Task RunWhileLeading_WhenEachLeaseIsLostAsSoonAsGranted_WaitsTheRetryIntervalBeforeTryingAgain() =>
        AssertWaitsTheRetryIntervalAfterTheFirstLeaseAsync(new ScriptedElection { LoseOnGrant = true }, token => Task.Delay(Timeout.Infinite, token));

    /// <summary>
    /// Work that returns while this node still leads (say it found nothing to do): the loop lets go and waits the retry
    /// interval before it tries again, as after a loss or a failure. Regression: it acquired and ran the work again at once,
    /// so work that returns at once made the loop spin against the store.
    /// </summary>
    [Fact]
    public async Task RunWhileLeading_WhenTheWorkReturnsWhileStillLeading_WaitsTheRetryIntervalBeforeTryingAgain()
    {
        var runs = 0;
        await AssertWaitsTheRetryIntervalAfterTheFirstLeaseAsync(
            new ScriptedElection(),
            _ =>
            {
                Interlocked.Increment(ref runs);
                return Task.CompletedTask;
            },
            () => Assert.Equal(1, Volatile.Read(ref runs)));
    }

    /// <summary>
    /// Runs the loop on a fake clock and checks that after the first lease it let go and waits the retry interval (nothing
    /// tried meanwhile, <paramref name="whileWaiting"/> holds), then tries again once the clock passed it.
    /// </summary>
    private static async Task AssertWaitsTheRetryIntervalAfterTheFirstLeaseAsync(ScriptedElection election, Func<CancellationToken, Task> work, Action? whileWaiting = null)
    {
        var clock = new TimerSignallingClock();
        var interval = TimeSpan.FromSeconds(5);
        using var stopping = new CancellationTokenSource();
        var loop = Task.Run(() => election.RunWhileLeadingAsync("job", work, interval, clock, NullLogger.Instance, stopping.Token));
        try
        {
            var first = Assert.IsType<ScriptedElection.Lease>(await election.NextTryAsync());

            // Either the loop waits on the clock, or (spinning) it has tried again already.
            var timer = clock.TimerCreated.ReadAsync().AsTask();
            var again = election.Tries.WaitToReadAsync().AsTask();
            Assert.True(await Task.WhenAny(timer, again).WaitAsync(Eventually.DefaultTimeout) == timer, "the loop tried again at once, without waiting on the clock");
            Assert.Equal(interval, await timer);
            Assert.True(first.Released);
            whileWaiting?.Invoke();
            Assert.False(election.Tries.TryPeek(out _), "the loop tried again before the retry interval passed");

            // The timer exists (it was reported from its creation): advancing now fires it.
            clock.Advance(interval);
            Assert.NotNull(await election.NextTryAsync());
        }
        finally
        {
            await stopping.CancelAsync();
            try
            {
                await loop.WaitAsync(Eventually.DefaultTimeout);
            }
            catch (OperationCanceledException)
            {
            }
        }
    }

    /// <summary>A fake clock that reports each one-shot timer's delay once the timer exists, so a test advances it only then.</summary>
    private sealed class TimerSignallingClock : FakeTimeProvider
    {
        private readonly Channel<TimeSpan> _created = Channel.CreateUnbounded<TimeSpan>();

        public ChannelReader<TimeSpan> TimerCreated => _created.Reader;

        public override ITimer CreateTimer(TimerCallback callback, object? state, TimeSpan dueTime, TimeSpan period)
        {
            var timer = base.CreateTimer(callback, state, dueTime, period);
            if (period == Timeout.InfiniteTimeSpan)
            {
                _created.Writer.TryWrite(dueTime);
            }

            return timer;
        }
    }

    /// <summary>One contender's loop, with work that signals its start and runs until its token fires.</summary>
    private sealed class Worker : IAsyncDisposable
    {
        private readonly CancellationTokenSource _stopping = new();
        private readonly TaskCompletionSource<CancellationToken> _started = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private Task _loop = Task.CompletedTask;

        public Task Started => _started.Task;

        public CancellationToken WorkToken => _started.Task.Result;

        public static Worker Start(ILeaderElection election, string resource)
        {
            var worker = new Worker();
            worker._loop = election.RunWhileLeadingAsync(
                resource,
                async token =>
                {
                    worker._started.TrySetResult(token);
                    await Task.Delay(Timeout.Infinite, token);
                },
                RetryInterval,
                TimeProvider.System,
                NullLogger.Instance,
                worker._stopping.Token);
            return worker;
        }

        public async Task StopAsync()
        {
            await _stopping.CancelAsync();
            try
            {
                await _loop.WaitAsync(Eventually.DefaultTimeout);
            }
            catch (OperationCanceledException)
            {
            }
        }

        public async ValueTask DisposeAsync()
        {
            await StopAsync();
            _stopping.Dispose();
        }
    }
}
