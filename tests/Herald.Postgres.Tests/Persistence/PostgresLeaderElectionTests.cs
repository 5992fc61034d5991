using System.Globalization;
using Herald.Conformance;
using Herald.Conformance.Faults;
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
    public async Task ALeaderWhoseNetworkPathDiesSilently_GivesUpFirst_AndTheServerThenFreesItsLockForAnotherContender()
    {
        // The server kept the advisory lock of a leader it no longer heard from until TCP noticed the dead peer (two hours
        // and more by default), so no other node could lead meanwhile; and the leader itself took 40 s to give up.
        var resource = NewResource();
        var key = AdvisoryLockKey.ForLeadership(schema.Schema, resource);
        await using var forwarder = new TcpForwarder(new Npgsql.NpgsqlConnectionStringBuilder(PostgresTestDatabase.ConnectionString).Port);
        var throughForwarder = new Npgsql.NpgsqlConnectionStringBuilder(PostgresTestDatabase.ConnectionString) { Host = "127.0.0.1", Port = forwarder.Port, Pooling = false };
        await using var cutOff = await PostgresEventStore.CreateAsync(throughForwarder.ConnectionString, new PostgresStoreOptions { Schema = schema.Schema });
        var election = new PostgresLeaderElection(cutOff, NullLogger.Instance) { IdleSessionTimeout = TimeSpan.FromSeconds(25) };
        var first = await election.TryAcquireAsync(resource);
        Assert.NotNull(first);
        var lost = new TaskCompletionSource<TimeSpan>(TaskCreationOptions.RunContinuationsAsynchronously);
        var clock = System.Diagnostics.Stopwatch.StartNew();
        await using var registration = first.LeadershipLost.Register(() => lost.TrySetResult(clock.Elapsed));
        Assert.NotNull(await LeaderElectionSchema.HolderAsync(key));

        forwarder.Freeze();
        clock.Restart();

        var second = await Eventually.ValueAsync(
            async () => await Contender(1).TryAcquireAsync(resource), "another contender acquires the lock", election.IdleSessionTimeout + Eventually.DefaultTimeout);
        var acquiredAt = clock.Elapsed;
        await second.DisposeAsync();

        // Three keep-alive intervals at most: a wait, then a round trip given twice as long.
        var lostAt = await lost.Task.WaitAsync(TimeSpan.Zero);
        Assert.True(lostAt < acquiredAt, $"the cut-off leader gave up after {lostAt}, another led from {acquiredAt}");
        Assert.True(lostAt < PostgresLeaderElection.KeepAliveInterval * 4, $"the cut-off leader gave up only after {lostAt}");
        await first.DisposeAsync();
    }

    [Fact]
    public async Task AnAcquireFailingAfterTheServerGrantedTheLock_LeavesNoLockOnItsPooledSession()
    {
        // An acquire that threw once the server had run pg_try_advisory_lock (cancelled by its caller while the statement
        // ran, a cancel the server acts on, or, as here, a later part of the statement failing) gave its connection back to
        // the pool with the session still holding the lock: a session lock outlives the statement that took it. No other
        // node could lead until the pool reused or dropped that connection (minutes on an idle pool).
        var resource = NewResource();
        var key = AdvisoryLockKey.ForLeadership(schema.Schema, resource);
        var failing = new PostgresLeaderElection(schema.Nodes[0], NullLogger.Instance) { IdleSessionTimeout = TimeSpan.FromDays(30) };

        await Assert.ThrowsAsync<Npgsql.PostgresException>(async () => await failing.TryAcquireAsync(resource));

        Assert.Null(await LeaderElectionSchema.HolderAsync(key));
        var other = await Contender(1).TryAcquireAsync(resource);
        Assert.NotNull(other);
        await other.DisposeAsync();
    }

    [Fact]
    public async Task ALeaseGivenBack_LeavesItsPooledSessionWithoutTheIdleLimit()
    {
        // The lease's session is given the idle limit while it holds the lock; left on it, the server would end the pooled
        // connection while it waited for its next user, who would then fail. One pooled session that Npgsql does not reset,
        // so what the lease left on it shows.
        var oneSession = new Npgsql.NpgsqlConnectionStringBuilder(PostgresTestDatabase.ConnectionString) { MaxPoolSize = 1, NoResetOnClose = true };
        await using var node = await PostgresEventStore.CreateAsync(oneSession.ConnectionString, new PostgresStoreOptions { Schema = schema.Schema });
        var lease = await new PostgresLeaderElection(node, NullLogger.Instance).TryAcquireAsync(NewResource());
        Assert.NotNull(lease);
        await lease.DisposeAsync();

        await using var connection = await node.OpenStartedAsync(CancellationToken.None);
        await using var command = new Npgsql.NpgsqlCommand("SHOW idle_session_timeout", connection);
        Assert.Equal("0", (string)(await command.ExecuteScalarAsync())!);
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
    public async Task ASessionSharedWithAnotherHolderOfTheLock_DoesNotAcquireItAgain()
    {
        // pg_try_advisory_lock succeeds again on a session that holds the lock already. A pooler that hands each
        // transaction to any server session (PgBouncer's pool_mode=transaction) gives one node the session on which another
        // node took the lock, and both led. Here one pooled session that Npgsql does not reset stands for it: another
        // client of that session took the lock and left it there.
        var oneSession = new Npgsql.NpgsqlConnectionStringBuilder(PostgresTestDatabase.ConnectionString) { MaxPoolSize = 1, NoResetOnClose = true };
        await using var node = await PostgresEventStore.CreateAsync(oneSession.ConnectionString, new PostgresStoreOptions { Schema = schema.Schema });
        var resource = NewResource();
        var key = AdvisoryLockKey.ForLeadership(schema.Schema, resource);
        await using (var other = await node.OpenStartedAsync(CancellationToken.None))
        {
            await using var take = new Npgsql.NpgsqlCommand($"SELECT pg_advisory_lock({key.ToString(CultureInfo.InvariantCulture)})", other);
            await take.ExecuteNonQueryAsync();
        }

        var lease = await new PostgresLeaderElection(node, NullLogger.Instance).TryAcquireAsync(resource);
        if (lease is not null)
        {
            await lease.DisposeAsync();
        }

        Assert.Null(lease);
        await using var release = await node.OpenStartedAsync(CancellationToken.None);
        await using var unlock = new Npgsql.NpgsqlCommand($"SELECT pg_advisory_unlock_all()", release);
        await unlock.ExecuteNonQueryAsync();
    }

    [Fact]
    public async Task ADataSourceThatMultiplexes_IsRefused_SinceItsStatementsShareSessions()
    {
        // With Npgsql's multiplexing a connection's statements run on whichever session is free: the lock was taken on one,
        // the lease's watch refused at once (no waiting on a multiplexed connection), and every lease was lost as soon as it
        // was granted, its unlock free to run on a session that did not hold the lock.
        var multiplexed = new Npgsql.NpgsqlConnectionStringBuilder(PostgresTestDatabase.ConnectionString) { Multiplexing = true };
        await using var node = await PostgresEventStore.CreateAsync(multiplexed.ConnectionString, new PostgresStoreOptions { Schema = schema.Schema });

        var refused = await Assert.ThrowsAsync<NotSupportedException>(async () => await new PostgresLeaderElection(node, NullLogger.Instance).TryAcquireAsync(NewResource()));

        Assert.Contains("Multiplexing", refused.Message, StringComparison.Ordinal);
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
