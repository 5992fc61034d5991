using System.Globalization;
using Herald.Conformance;
using Herald.Conformance.Persistence;
using Herald.Persistence;
using Herald.Postgres.EventSourcing;
using Herald.Postgres.Persistence;
using Microsoft.Extensions.Logging.Abstractions;

namespace Herald.Postgres.Tests.Persistence;

/// <summary>Two stores (two nodes' pools) on one schema of their own, shared by a test class.</summary>
public sealed class LeaderElectionSchema : IAsyncLifetime
{
    public string Schema { get; } = PostgresTestDatabase.NewSchema();

    internal IReadOnlyList<PostgresEventStore> Nodes { get; private set; } = [];

    public async Task InitializeAsync()
    {
        var options = new PostgresStoreOptions { Schema = Schema };
        Nodes = [await PostgresEventStore.CreateAsync(PostgresTestDatabase.ConnectionString, options), await PostgresEventStore.CreateAsync(PostgresTestDatabase.ConnectionString, options)];
    }

    public async Task DisposeAsync()
    {
        foreach (var node in Nodes)
        {
            await node.DisposeAsync();
        }

        await PostgresTestDatabase.DropSchemaAsync(Schema);
    }

    /// <summary>The backend holding the advisory lock with <paramref name="key"/>, or null when nobody does.</summary>
    public static async Task<int?> HolderAsync(long key)
    {
        var holders = await PostgresTestDatabase.ScalarAsync<int[]>(
            "SELECT coalesce(array_agg(pid), '{}') FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1 " +
            $"AND ((classid::bigint << 32) | objid::bigint) = {key.ToString(CultureInfo.InvariantCulture)}");
        return holders.Length == 0 ? null : Assert.Single(holders);
    }
}

/// <summary>The election across processes: contenders on two pools (two nodes) of one schema, each session a contender.</summary>
public sealed class PostgresLeaderElectionTests(LeaderElectionSchema schema) : LeaderElectionConformance, IClassFixture<LeaderElectionSchema>
{
    protected override ValueTask<IReadOnlyList<ILeaderElection>> CreateContendersAsync(int count) =>
        ValueTask.FromResult<IReadOnlyList<ILeaderElection>>([.. Enumerable.Range(0, count).Select(Contender)]);

    [Fact]
    public async Task KillingTheLeadersBackend_FiresLeadershipLost_AndLetsAnotherContenderAcquire()
    {
        var resource = NewResource();
        var key = AdvisoryLockKey.ForLeadership(schema.Schema, resource);
        var lost = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        var first = await Contender(0).TryAcquireAsync(resource);
        Assert.NotNull(first);
        await using var registration = first.LeadershipLost.Register(lost.SetResult);
        var backend = Assert.NotNull(await LeaderElectionSchema.HolderAsync(key));
        Assert.Null(await Contender(1).TryAcquireAsync(resource));

        Assert.True(await PostgresTestDatabase.ScalarAsync<bool>($"SELECT pg_terminate_backend({backend})"));

        await lost.Task.WaitAsync(Eventually.DefaultTimeout);
        Assert.False(first.IsHeld);
        var second = await Eventually.ValueAsync(async () => await Contender(1).TryAcquireAsync(resource), "another contender acquires the lost lease");
        await using (second)
        {
            Assert.NotEqual(backend, await LeaderElectionSchema.HolderAsync(key));

            // Disposing the lost lease touches nothing of the new leader's.
            await first.DisposeAsync();
            Assert.True(second.IsHeld);
            Assert.Null(await Contender(0).TryAcquireAsync(resource));
        }

        Assert.Null(await LeaderElectionSchema.HolderAsync(key));
    }

    [Fact]
    public async Task ALeaseHoldsItsLockOnOneBackend_AndDisposingItUnlocksBeforeTheConnectionGoesBackToThePool()
    {
        var resource = NewResource();
        var key = AdvisoryLockKey.ForLeadership(schema.Schema, resource);

        var lease = await Contender(0).TryAcquireAsync(resource);
        Assert.NotNull(lease);
        var backend = Assert.NotNull(await LeaderElectionSchema.HolderAsync(key));
        await lease.DisposeAsync();

        // The session lives on in the pool, so only the unlock can have freed the lock.
        Assert.Null(await LeaderElectionSchema.HolderAsync(key));
        Assert.Equal(1L, await PostgresTestDatabase.ScalarAsync<long>($"SELECT count(*) FROM pg_stat_activity WHERE pid = {backend}"));
    }

    [Fact]
    public async Task LeasesGivenBackAtOnce_LeaveNoLockBehind_InManyRounds()
    {
        // A lease given back right after it was taken (a stream processor gives back partitions that way) cancels its
        // watch while that may be starting; whatever the moment, the lock must be gone once the dispose returns.
        var resource = NewResource();
        var key = AdvisoryLockKey.ForLeadership(schema.Schema, resource);
        for (var round = 0; round < 200; round++)
        {
            var lease = await Contender(round).TryAcquireAsync(resource);
            Assert.NotNull(lease);
            switch (round % 3)
            {
                case 1:
                    await Task.Yield();
                    break;
                case 2:
                    // Held across a round trip of another session, which sees it: time for the watch to start.
                    Assert.NotNull(await LeaderElectionSchema.HolderAsync(key));
                    break;
            }

            await lease.DisposeAsync();
            Assert.True(await LeaderElectionSchema.HolderAsync(key) is null, $"Round {round}: the lock is still held after the lease was given back.");
        }
    }

    [Fact]
    public void LockKeys_AreTheOnesEarlierVersionsTook_SoNodesInARollingUpgradeShareThem()
    {
        Assert.Equal(216143739924590416L, AdvisoryLockKey.ForMigrations("herald"));
        Assert.Equal(-2145225254874919311L, AdvisoryLockKey.ForLeadership("herald", "outbox-relay"));
        Assert.NotEqual(AdvisoryLockKey.ForLeadership("herald", "a"), AdvisoryLockKey.ForLeadership("herald", "b"));
        Assert.NotEqual(AdvisoryLockKey.ForLeadership("one", "a"), AdvisoryLockKey.ForLeadership("two", "a"));
    }

    private PostgresLeaderElection Contender(int index) => new(schema.Nodes[index % schema.Nodes.Count], NullLogger.Instance);
}
