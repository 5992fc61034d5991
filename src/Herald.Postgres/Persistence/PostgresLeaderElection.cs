using System.Globalization;
using Herald.Persistence;
using Herald.Postgres.EventSourcing;
using Microsoft.Extensions.Logging;
using Npgsql;
using NpgsqlTypes;

namespace Herald.Postgres.Persistence;

/// <summary>
/// Leader election across processes on one schema: the leader of a resource holds a session advisory lock (keyed by
/// <see cref="AdvisoryLockKey.ForLeadership"/>) on a connection it keeps while it leads. The server frees the lock when
/// that session ends (a release, a crash, a killed backend, a lost network), so another node can take over; the lease
/// watches its connection and fires <see cref="LeaderLease.LeadershipLost"/> when it fails.
/// </summary>
internal sealed class PostgresLeaderElection(PostgresEventStore store, ILogger logger) : ILeaderElection
{
    /// <summary>How long a held lock's connection may stay silent before a round trip proves it still works.</summary>
    internal static readonly TimeSpan KeepAliveInterval = TimeSpan.FromSeconds(5);

    /// <summary>
    /// How long the server keeps a held lock's session that it hears nothing from (its keep-alive round trips stopped
    /// arriving: the leader's host or the network path died). Without it the server held the lock until TCP noticed the
    /// dead peer, two hours and more by default, and no other node could lead meanwhile. Well past the time the leader
    /// takes to give up on its side (<see cref="KeepAlive"/>: three keep-alive intervals), so two never lead at once.
    /// </summary>
    internal TimeSpan IdleSessionTimeout { get; init; } = TimeSpan.FromSeconds(60);

    // The granted session lock on a bigint key in pg_locks: its high half (classid, $1) and low half (objid, $2), objsubid 1.
    private const string HeldLock =
        "SELECT 1 FROM pg_catalog.pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1 AND classid = $1 AND objid = $2";

    // One statement, so the limit comes with the lock or not at all: 0 not acquired; 1 acquired on a server older than
    // PostgreSQL 14, which has no idle_session_timeout (the lock stays until TCP notices, as before); 2 acquired and limited.
    // A session that holds the lock already is another client's (a pooler such as PgBouncer in transaction mode shares
    // sessions): pg_try_advisory_lock would succeed again there, since session locks are re-entrant, so it is not asked.
    private const string TryLock =
        "SELECT CASE WHEN EXISTS (" + HeldLock + " AND pid = pg_backend_pid()) THEN 0 WHEN NOT pg_try_advisory_lock($3) THEN 0 " +
        "WHEN current_setting('server_version_num')::int < 140000 THEN 1 ELSE 2 + 0 * length(set_config('idle_session_timeout', $4, false)) END";

    // Whether the data source multiplexes (see Multiplexes): -1 until the first connection is opened.
    private int _multiplexing = -1;

    public async ValueTask<LeaderLease?> TryAcquireAsync(string resource, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(resource);
        var key = AdvisoryLockKey.ForLeadership(store.Schema, resource);
        var connection = await store.OpenStartedAsync(cancellationToken).ConfigureAwait(false);
        if (Multiplexes(connection))
        {
            await connection.DisposeAsync().ConfigureAwait(false);
            throw new NotSupportedException(
                $"Leader election on PostgreSQL holds a session advisory lock on a connection of its own, which Multiplexing=true does not give: use a data source without multiplexing for schema '{store.Schema}'.");
        }

        try
        {
            await using var command = new NpgsqlCommand(TryLock, connection);
            AddKeyHalves(command.Parameters, key);
            command.Parameters.Add(Key(key));
            command.Parameters.Add(new NpgsqlParameter<string> { TypedValue = ((long)IdleSessionTimeout.TotalMilliseconds).ToString(CultureInfo.InvariantCulture) });
            if ((int)(await command.ExecuteScalarAsync(cancellationToken).ConfigureAwait(false))! is var acquired and > 0)
            {
                return new Lease(connection, key, limited: acquired == 2, resource, store.Schema, logger);
            }
        }
        catch
        {
            // Cancelled or failed once the server may have granted the lock (the reply was on its way): a session lock
            // outlives the statement that took it, so the pooled session would keep it, and nobody could lead, until the
            // pool reused or dropped the connection.
            await UnlockAsync(connection, key, resetIdleLimit: connection.State == System.Data.ConnectionState.Open && connection.PostgreSqlVersion.Major >= 14)
                .ConfigureAwait(false);
            await connection.DisposeAsync().ConfigureAwait(false);
            throw;
        }

        await connection.DisposeAsync().ConfigureAwait(false);
        return null;
    }

    public async ValueTask<bool> IsLedAsync(string resource, CancellationToken cancellationToken = default)
    {
        ArgumentException.ThrowIfNullOrEmpty(resource);

        var key = AdvisoryLockKey.ForLeadership(store.Schema, resource);
        await using var connection = await store.OpenStartedAsync(cancellationToken).ConfigureAwait(false);
        await using var command = new NpgsqlCommand(
            "SELECT EXISTS (" + HeldLock + " AND database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database()))", connection);
        AddKeyHalves(command.Parameters, key);
        return (bool)(await command.ExecuteScalarAsync(cancellationToken).ConfigureAwait(false))!;
    }

    private static NpgsqlParameter<long> Key(long key) => new() { TypedValue = key, NpgsqlDbType = NpgsqlDbType.Bigint };

    /// <summary>The parameters $1 and $2 of <see cref="HeldLock"/>: the key's high and low halves, as pg_locks shows them.</summary>
    private static void AddKeyHalves(NpgsqlParameterCollection parameters, long key)
    {
        parameters.Add(new NpgsqlParameter<uint> { TypedValue = (uint)((ulong)key >> 32), NpgsqlDbType = NpgsqlDbType.Oid });
        parameters.Add(new NpgsqlParameter<uint> { TypedValue = (uint)key, NpgsqlDbType = NpgsqlDbType.Oid });
    }

    /// <summary>
    /// Whether the data source multiplexes (Npgsql's Multiplexing=true), running each statement of a connection on whichever
    /// session is free: the lock would be taken on one session and watched, kept alive and unlocked on others, so every
    /// lease was lost as soon as it was granted, and its unlock could miss the session that held the lock, which kept it.
    /// </summary>
    private bool Multiplexes(NpgsqlConnection connection)
    {
        if (_multiplexing < 0)
        {
            _multiplexing = new NpgsqlConnectionStringBuilder(connection.ConnectionString).Multiplexing ? 1 : 0;
        }

        return _multiplexing == 1;
    }

    /// <summary>
    /// Unlocks before the connection goes back to the pool, where its session would keep the lock; and gives the session
    /// back its own idle limit, or the server would end it while it waits in the pool. An unlock of a lock the session
    /// does not hold changes nothing.
    /// </summary>
    private static async ValueTask UnlockAsync(NpgsqlConnection connection, long key, bool resetIdleLimit)
    {
        try
        {
            if (connection.State == System.Data.ConnectionState.Open)
            {
                await using var batch = new NpgsqlBatch(connection);
                var unlock = new NpgsqlBatchCommand("SELECT pg_advisory_unlock($1)");
                unlock.Parameters.Add(Key(key));
                batch.BatchCommands.Add(unlock);
                if (resetIdleLimit)
                {
                    batch.BatchCommands.Add(new NpgsqlBatchCommand("RESET idle_session_timeout"));
                }

                await batch.ExecuteNonQueryAsync(CancellationToken.None).ConfigureAwait(false);
            }
        }
        catch (Exception ex) when (ex is NpgsqlException or InvalidOperationException or ObjectDisposedException)
        {
            // A broken connection holds no lock any more: the server released it with the session.
        }
    }

    private sealed class Lease : LeaderLease
    {
        private readonly NpgsqlConnection _connection;
        private readonly long _key;
        private readonly bool _limited;
        private readonly string _schema;
        private readonly ILogger _logger;
        private readonly CancellationTokenSource _released = new();
        private readonly Task _watch;

        public Lease(NpgsqlConnection connection, long key, bool limited, string resource, string schema, ILogger logger)
            : base(resource)
        {
            _connection = connection;
            _key = key;
            _limited = limited;
            _schema = schema;
            _logger = logger;
            _watch = Task.Run(() => WatchAsync(_released.Token));
        }

        protected override async ValueTask ReleaseAsync()
        {
            // The watch uses the connection; it must be off it before the unlock runs there.
            await _released.CancelAsync().ConfigureAwait(false);
            await _watch.ConfigureAwait(false);
            try
            {
                await UnlockAsync(_connection, _key, _limited).ConfigureAwait(false);
            }
            finally
            {
                await _connection.DisposeAsync().ConfigureAwait(false);
                _released.Dispose();
            }
        }

        private async Task WatchAsync(CancellationToken released)
        {
            try
            {
                await KeepAlive.RunAsync(_connection, KeepAliveInterval, SignalLost, released).ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (released.IsCancellationRequested)
            {
            }
            catch (Exception ex)
            {
                // A killed backend ends the wait at once with its error; a silent network loss fails the next round trip.
                Log.LeadershipLost(_logger, ex, Resource, _schema);
                SignalLost();
            }
        }
    }
}
