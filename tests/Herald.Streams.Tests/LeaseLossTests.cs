using System.Collections.Concurrent;
using Herald.Conformance.Persistence;
using Herald.EventSourcing;
using Herald.Hosting;
using Herald.Messages;
using Herald.Persistence;
using Herald.Reliability.DeadLetters;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.DependencyInjection.Extensions;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Time.Testing;

namespace Herald.Streams.Tests;

public sealed class LeaseLossTests
{
    /// <summary>A PartitionBalanceInterval too long to wait on was accepted and ended the balance loop at its first Task.Delay.</summary>
    [Theory]
    [InlineData(nameof(StreamProcessorOptions.PartitionBalanceInterval))]
    public async Task ATimeSettingTooLongToWaitOn_FailsTheProcessorNamingIt(string setting)
    {
        using var host = await ProcessorScenario.StartHostAsync(_ => { });
        var options = new StreamProcessorOptions { Partitions = 2 };
        typeof(StreamProcessorOptions).GetProperty(setting)!.SetValue(options, TimeSpan.MaxValue);

        var refused = Assert.ThrowsAny<ArgumentException>(() => new StreamProcessor("too-long", CountTopology(), host.Services, options));

        Assert.Equal(setting, refused.ParamName);
    }

    /// <summary>
    /// A processor's partitions and stages keep state and checkpoints under its name and ":"-separated suffixes ("s:1",
    /// "stream:s:1:stage-0", "s:b1"), so a processor named "s:1" would share partition 1 of "s"'s state and checkpoint.
    /// </summary>
    [Theory]
    [InlineData("s:1")]
    [InlineData("s:1:stage-0")]
    [InlineData("s:b1")]
    public async Task ANameHoldingTheSeparatorOfPartitionsAndStages_IsRefused(string name)
    {
        using var host = await ProcessorScenario.StartHostAsync(_ => { });

        var refused = Assert.ThrowsAny<ArgumentException>(() => new StreamProcessor(name, CountTopology(), host.Services));

        Assert.Equal("name", refused.ParamName);
        Assert.Contains("':'", refused.Message, StringComparison.Ordinal);
    }

    [Fact]
    public async Task APartitionWhoseLeaseIsLost_CommitsNothingMore()
    {
        var election = new ControlledElection();
        using var host = await ProcessorScenario.StartHostAsync(h => h.Services.AddSingleton<ILeaderElection>(election));
        var events = host.Services.GetRequiredService<IEventStore>();
        var envelopes = host.Services.GetRequiredService<EnvelopeFactory>();
        var checkpoints = host.Services.GetRequiredService<ICheckpointStore>();
        for (var i = 0; i < 8; i++)
        {
            await events.AppendAsync("order-" + i, ExpectedVersion.NoStream, [envelopes.Create(ProcessorScenario.OrderAt(i))]);
        }

        var builder = new StreamBuilder();
        builder.Stream<Order>().GroupBy(o => o.ProductId).Count("orders");
        var options = new StreamProcessorOptions { Partitions = 2, PartitionBalanceInterval = TimeSpan.FromHours(1) }; // only the commit notices
        await using var processor = new StreamProcessor("lossy", builder.Build(), host.Services, options);
        await processor.StartAsync();
        await processor.WaitForPositionAsync(await events.GetLastPositionAsync()).WaitAsync(TimeSpan.FromSeconds(30));
        var before = await checkpoints.GetCheckpointAsync("stream:lossy:1");
        Assert.NotNull(before);

        // Partition 1 is someone else's now; more events for every product come.
        election.Lose("$stream:lossy:1");
        for (var i = 8; i < 16; i++)
        {
            await events.AppendAsync("order-" + i, ExpectedVersion.NoStream, [envelopes.Create(ProcessorScenario.OrderAt(i))]);
        }

        var failure = await Assert.ThrowsAsync<LeaseLostException>(() => processor.Completion.WaitAsync(TimeSpan.FromSeconds(30)));
        Assert.Contains("lost partition 1", failure.Message, StringComparison.Ordinal);
        Assert.Equal(before, await checkpoints.GetCheckpointAsync("stream:lossy:1"));
        await host.StopAsync();
    }

    [Fact]
    public async Task InMemory_ACommitOfAProcessThatAnotherSupplantedOnAPartition_FailsAndWritesNothing()
    {
        using var host = await ProcessorScenario.StartHostAsync(h => h.Services.Replace(ServiceDescriptor.Singleton<ILeaderElection>(new AlwaysLeader())));
        await SupplantedOwnerAsync(host, host);
        await host.StopAsync();
    }

    [Fact]
    public async Task Sqlite_ACommitOfAProcessThatAnotherSupplantedOnAPartition_FailsAndWritesNothing()
    {
        // The two owners share a host (an election that always grants stands in for a lost lease), and the fence is the
        // same checkpoint-store key on that engine.
        var file = TestSqlite.NewFile("fence");
        try
        {
            using var host = await ProcessorScenario.StartHostAsync(h =>
            {
                h.UseSqlite(file).UseSqliteStreamState();
                h.Services.Replace(ServiceDescriptor.Singleton<ILeaderElection>(new AlwaysLeader()));
            });
            await SupplantedOwnerAsync(host, host);
            await host.StopAsync();
        }
        finally
        {
            TestSqlite.Delete(file);
        }
    }

    [Fact]
    public async Task Postgres_ACommitOfAProcessThatAnotherSupplantedOnAPartition_FailsAndWritesNothing()
    {
        var schema = TestPostgres.NewSchema();
        try
        {
            Action<HeraldBuilder> configure = h =>
            {
                h.UsePostgres(TestPostgres.ConnectionString, o => o.Schema = schema).UsePostgresStreamState();
                h.Services.Replace(ServiceDescriptor.Singleton<ILeaderElection>(new AlwaysLeader()));
            };
            using var first = await ProcessorScenario.StartHostAsync(configure);
            using var second = await ProcessorScenario.StartHostAsync(configure);
            await SupplantedOwnerAsync(first, second);
            await second.StopAsync();
            await first.StopAsync();
        }
        finally
        {
            await TestPostgres.DropAsync(schema);
        }
    }

    /// <summary>
    /// The run fails while a balance round is under way, and the round finds no partition left for this process (its
    /// only one was lost and another process holds it): the processor must stop and fault Completion. Regression: the
    /// failure watcher stopped the balancing first, then found that the round had replaced the failed run with an empty
    /// one and returned; the processor ran on with no partition and no balancing, never reported the failure, and kept
    /// its member slot, so the other processes left a share of the partitions to it for good.
    /// </summary>
    [Fact]
    public async Task ARunFailingDuringABalanceRound_FaultsTheProcessor_AndGivesItsMemberSlotUp()
    {
        var election = new ControlledElection();
        var time = new FakeTimeProvider();
        using var host = await ProcessorScenario.StartHostAsync(_ => { });
        var options = new StreamProcessorOptions { Partitions = 1, PartitionBalanceInterval = TimeSpan.FromMinutes(1) };
        await using var processor = new StreamProcessor("rebalanced", CountTopology(), new WithElection(host.Services, election, time), options);
        await processor.StartAsync();
        await processor.WaitForPositionAsync(await AppendAsync(host.Services, 0, 4)).WaitAsync(TimeSpan.FromSeconds(30));

        // The partition is another process's now. The next round looks for it again (it would take it back were it
        // free), and that look is a slow round trip.
        election.Lose("$stream:rebalanced:0");
        var answer = new TaskCompletionSource();
        var looking = election.HoldNextAttempt("$stream:rebalanced:0", answer.Task);
        time.Advance(options.PartitionBalanceInterval);
        await looking.WaitAsync(TimeSpan.FromSeconds(30));

        // Meanwhile the run's next commit finds the lease lost: the run fails; then the look answers.
        var head = await AppendAsync(host.Services, 4, 8);
        await Assert.ThrowsAsync<LeaseLostException>(() => processor.WaitForPositionAsync(head).WaitAsync(TimeSpan.FromSeconds(30)));
        answer.SetResult();

        var failure = await Assert.ThrowsAsync<LeaseLostException>(() => processor.Completion.WaitAsync(TimeSpan.FromSeconds(30)));
        Assert.Contains("lost partition 0", failure.Message, StringComparison.Ordinal);
        Assert.False(processor.Balancing);
        Assert.False(election.Holds("$stream:rebalanced:member:0"));
        await host.StopAsync();
    }

    /// <summary>
    /// The first run fails before StartAsync has started the balancing: the processor must fault with no balancing loop
    /// left. Regression: the failure watcher stopped the balancing before it had started, so the loop StartAsync started
    /// next outlived the failure: it took partitions again for the failed processor, and once that processor restarted
    /// (as the hosted service does) it ran two loops, one of which StopAsync never stopped.
    /// </summary>
    [Fact]
    public async Task ARunFailingBeforeTheBalancingStarts_FaultsTheProcessor_WithNoBalancingLeft()
    {
        var election = new ControlledElection();
        using var host = await ProcessorScenario.StartHostAsync(_ => { });
        var options = new StreamProcessorOptions { Partitions = 1, PartitionBalanceInterval = TimeSpan.FromMinutes(1) };
        await using var processor = new StreamProcessor("early", CountTopology(), new WithElection(host.Services, election, new FakeTimeProvider()), options);

        // The first run fails as soon as it reads: its partition is lost, and its first commit finds that.
        processor.RunReading = async run =>
        {
            processor.RunReading = null;
            election.Lose("$stream:early:0");
            await AppendAsync(host.Services, 0, 4);
            await run.Failed.Task.WaitAsync(TimeSpan.FromSeconds(30));
        };
        await processor.StartAsync();

        await Assert.ThrowsAsync<LeaseLostException>(() => processor.Completion.WaitAsync(TimeSpan.FromSeconds(30)));
        Assert.False(processor.Balancing);
        Assert.False(election.Holds("$stream:early:member:0"));
        await host.StopAsync();
    }

    private static StreamTopology CountTopology()
    {
        var builder = new StreamBuilder();
        builder.Stream<Order>().GroupBy(o => o.ProductId).Count("orders");
        return builder.Build();
    }

    private static async Task<long> AppendAsync(IServiceProvider services, int from, int to)
    {
        var events = services.GetRequiredService<IEventStore>();
        var envelopes = services.GetRequiredService<EnvelopeFactory>();

        // The last order's own position, not GetLastPositionAsync: on PostgreSQL an older transaction elsewhere on the
        // server (another test's) holds the readable head back, and that returns what is readable after 10 s.
        var last = 0L;
        for (var i = from; i < to; i++)
        {
            last = Math.Max(last, (await events.AppendAsync("order-" + i, ExpectedVersion.NoStream, [envelopes.Create(ProcessorScenario.OrderAt(i))])).LastPosition);
        }

        return last;
    }

    /// <summary>
    /// A process runs the partition; another takes it over while the first has not noticed that it lost it (its lock
    /// session was killed, say: the keep-alive sees that up to 5 s later). Both then read the same events: the first one's
    /// commit must fail and write nothing (neither its state, nor its dead letter, nor its checkpoint), and the second
    /// counts every event once and goes on. Regression: the lease was checked only before the commit, so both committed.
    /// </summary>
    private static async Task SupplantedOwnerAsync(IHost first, IHost second)
    {
        var checkpoints = second.Services.GetRequiredService<ICheckpointStore>();
        Task<long> AppendAsync(int from, int to) => LeaseLossTests.AppendAsync(first.Services, from, to);

        static StreamTopology Topology()
        {
            // Order o10 (read after the takeover) is refused: its dead letter is written with the commit that passes it.
            var builder = new StreamBuilder();
            builder.Stream<Order>().GroupBy(o => o.OrderId == "o10" ? throw new InvalidOperationException("refused") : o.ProductId).Count("orders");
            return builder.Build();
        }

        var options = new StreamProcessorOptions { Partitions = 1, PartitionBalanceInterval = TimeSpan.FromHours(1) }; // only the commit notices
        var head = await AppendAsync(0, 8);
        await using var supplanted = new StreamProcessor("fenced", Topology(), first.Services, options);
        await supplanted.StartAsync();
        await supplanted.WaitForPositionAsync(head).WaitAsync(TimeSpan.FromSeconds(30));

        await using var owner = new StreamProcessor("fenced", Topology(), second.Services, options);
        await owner.StartAsync();
        Assert.Equal([0], owner.OwnedPartitions);
        head = await AppendAsync(8, 16);

        var failure = await Assert.ThrowsAsync<LeaseLostException>(() => supplanted.Completion.WaitAsync(TimeSpan.FromSeconds(30)));
        Assert.Contains("lost partition 0", failure.Message, StringComparison.Ordinal);
        await owner.WaitForPositionAsync(head).WaitAsync(TimeSpan.FromSeconds(30));
        Assert.False(owner.Completion.IsCompleted);
        Assert.Equal(head, await checkpoints.GetCheckpointAsync("stream:fenced"));
        var expected = Enumerable.Range(0, 16).Where(i => i != 10).Select(ProcessorScenario.OrderAt)
            .GroupBy(o => o.ProductId).Select(g => KeyValuePair.Create(g.Key, g.LongCount())).OrderBy(c => c.Key, StringComparer.Ordinal);
        Assert.Equal(expected, (await owner.QueryAllAsync<string, long>("orders")).OrderBy(c => c.Key, StringComparer.Ordinal));
        var deadLetter = Assert.Single(await second.Services.GetRequiredService<IDeadLetterStore>().ListAsync(new DeadLetterQuery { Endpoint = "stream:fenced" }));
        Assert.Contains("refused", deadLetter.ErrorMessage, StringComparison.Ordinal);
        await owner.StopAsync();
    }

    /// <summary>An election whose leases the test can take away.</summary>
    private sealed class ControlledElection : ILeaderElection
    {
        private readonly ConcurrentDictionary<string, Lease> _held = new(StringComparer.Ordinal);
        private readonly ConcurrentDictionary<string, bool> _taken = new(StringComparer.Ordinal);
        private readonly ConcurrentDictionary<string, (TaskCompletionSource Entered, Task Answer)> _slowed = new(StringComparer.Ordinal);

        public async ValueTask<LeaderLease?> TryAcquireAsync(string resource, CancellationToken cancellationToken = default)
        {
            if (_slowed.TryRemove(resource, out var attempt))
            {
                // A round trip under way answers, whatever its token says meanwhile.
                attempt.Entered.TrySetResult();
                await attempt.Answer;
            }

            var lease = new Lease(this, resource);
            return !_taken.ContainsKey(resource) && _held.TryAdd(resource, lease) ? lease : null;
        }

        public bool Holds(string resource) => _held.ContainsKey(resource);

        /// <summary>Holds the next attempt on <paramref name="resource"/> until <paramref name="answer"/> completes; the task returned completes once it began.</summary>
        public Task HoldNextAttempt(string resource, Task answer)
        {
            var entered = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            _slowed[resource] = (entered, answer);
            return entered.Task;
        }

        public void Lose(string resource)
        {
            _taken[resource] = true;
            _held[resource].Lose();
        }

        private sealed class Lease(ControlledElection election, string resource) : LeaderLease(resource)
        {
            public void Lose() => SignalLost();

            protected override ValueTask ReleaseAsync()
            {
                election._held.TryRemove(new KeyValuePair<string, Lease>(Resource, this));
                return ValueTask.CompletedTask;
            }
        }
    }
}
