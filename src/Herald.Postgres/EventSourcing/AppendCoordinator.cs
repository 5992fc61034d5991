using System.Diagnostics;
using System.Diagnostics.Metrics;
using System.Runtime.InteropServices;
using Herald.Diagnostics;
using Herald.EventSourcing;
using Herald.Internal;
using Herald.Postgres.Notifications;
using Microsoft.Extensions.Logging;
using Npgsql;

namespace Herald.Postgres.EventSourcing;

/// <summary>
/// Groups concurrent appends into shared commits (ADR 0001, "the append coordinator") on the core's
/// <see cref="GroupCommitter{TItem}"/>: its loop takes whatever is waiting (up to a count and an event budget, never
/// waiting for more) and the first idle writer sends it as one batch, which PostgreSQL runs as one implicit transaction: one round trip, one
/// commit. Inside, one set-based call of the append function per round of distinct streams locks the streams' rows, checks each member's
/// expected version and idempotency, and writes the members that pass. A member that fails its check writes nothing and
/// gets its <see cref="ConcurrencyException"/>; the others commit. That takes no savepoint per member, so a large group
/// never overflows PostgreSQL's subtransaction cache. A group is one transaction, so its events share a transaction id and
/// are contiguous in <c>$all</c>, ordered by the ordinals assigned here. The same round trip then wakes readers on other
/// nodes with a NOTIFY in a transaction of its own (see <see cref="ExecuteAsync"/>), at most once per
/// <see cref="PostgresStoreOptions.AppendNotifyInterval"/>: a group committed in between is covered by the next NOTIFY sent after it, in a later
/// group's round trip or, when no group follows in time, alone (see <see cref="TakeNotify"/>).
/// </summary>
internal sealed class AppendCoordinator : IAsyncDisposable
{
    /// <summary>Events one append may hold, so a group (budget plus one append) stays below 2^20 ordinals.</summary>
    public const int MaxEventsPerAppend = 500_000;

    /// <summary>Name of the histogram of appends per grouped commit (on Herald's meter).</summary>
    public const string GroupSizeMetric = "herald.event_store.append_group.size";

    private const int MaxRetries = 3;

    // The most bytes of events one group carries: PostgreSQL closes the connection on a protocol message of 1 GB or more,
    // which failed every member of a group of large events though each was within the limits. Appends past it wait for the
    // next group (an append up to PendingAppend.MaxBytes goes alone).
    private const long MaxBytesPerCall = 512L * 1024 * 1024;


    private static readonly Histogram<int> GroupSize =
        HeraldDiagnostics.Meter.CreateHistogram<int>(GroupSizeMetric, "{append}", "Appends committed together in one transaction by the PostgreSQL append coordinator.");

    private readonly NpgsqlDataSource _dataSource;
    private readonly EventStoreSql _sql;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;
    private readonly Action<long> _committed;
    private readonly GroupCommitter<PendingAppend> _committer;
    private readonly CommitNotifier _notifier;
    private readonly ITimer _notifyTimer;

    // The shortest time between two NOTIFYs (PostgresStoreOptions.AppendNotifyInterval, 2 ms). Each costs a transaction with
    // a transaction id, a heavyweight lock and a signal to every listening backend of the database; under load groups
    // commit faster than that, so they share one. A reader on another node learns of a commit at most this much (plus a
    // round trip) later; this process's readers are woken at the commit itself.
    private readonly TimeSpan _notifyInterval;

    // Stopwatch timestamp of the last NOTIFY taken (0: none yet); 1 while a committed group waits for a NOTIFY sent after
    // it; 1 while the timer that sends such a NOTIFY alone is armed.
    private long _lastNotify;
    private int _owed;
    private int _timerArmed;

    public AppendCoordinator(NpgsqlDataSource dataSource, EventStoreSql sql, PostgresStoreOptions options, TimeProvider time, ILogger logger, Action<long> committed)
    {
        _dataSource = dataSource;
        _sql = sql;
        _time = time;
        _logger = logger;
        _committed = committed;
        _notifyInterval = options.AppendNotifyInterval;

        // The throttle of a wake-up, not a time of the log: the real clock, so a store on a fake clock still wakes others.
        _notifier = new CommitNotifier(dataSource, sql.Channel, logger);
        _notifyTimer = TimeProvider.System.CreateTimer(static state => ((AppendCoordinator)state!).SendOwedNotify(), this, Timeout.InfiniteTimeSpan, Timeout.InfiniteTimeSpan);
        var groups = new GroupCommitOptions
        {
            QueueCapacity = options.AppendQueueCapacity,
            Writers = options.AppendWriters,
            MaxItems = options.MaxAppendsPerCommit,
            MaxWeight = Math.Min(options.MaxEventsPerCommit, MaxEventsPerAppend),
            MaxBytes = MaxBytesPerCall,
            Linger = options.AppendLinger,
            OwnerName = nameof(PostgresEventStore),
            DisposedMessage = "The event store was disposed; the append was not made.",
        };
        _committer = new GroupCommitter<PendingAppend>(groups, () => new Writer(this));
    }

    /// <summary>Queues the append and completes with its result or its exception once its group has committed.</summary>
    public async Task<AppendResult> AppendAsync(PendingAppend pending, CancellationToken cancellationToken)
    {
        await _committer.EnqueueAsync(pending, cancellationToken).ConfigureAwait(false);

        // A cancellation after this point may still let the append commit, as with any database call: retry it with the
        // same event ids, which is idempotent.
        return await pending.Completion.Task.WaitAsync(cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Stops taking appends, commits those already queued, waits for the committer's loop and writers to end and sends a NOTIFY still owed.</summary>
    public async ValueTask DisposeAsync()
    {
        await _committer.DisposeAsync().ConfigureAwait(false);
        await _notifyTimer.DisposeAsync().ConfigureAwait(false);
        SendOwedNotify();
        await _notifier.DisposeAsync().ConfigureAwait(false);
    }

    /// <summary>
    /// Whether the group about to be sent carries a NOTIFY: yes when none was taken for the interval. Its
    /// NOTIFY runs after its own commit, and after the commit of every group that completed before this call, so it
    /// settles what they owe. A group sent without one owes it once it completes (<see cref="Owe"/>).
    /// </summary>
    private bool TakeNotify()
    {
        var last = Volatile.Read(ref _lastNotify);
        if (last != 0 && Stopwatch.GetElapsedTime(last) < _notifyInterval)
        {
            return false;
        }

        if (Interlocked.CompareExchange(ref _lastNotify, Stopwatch.GetTimestamp(), last) != last)
        {
            // Another writer's group took it just now; its NOTIFY may run before this group commits, so this one owes.
            return false;
        }

        Volatile.Write(ref _owed, 0);
        return true;
    }

    // A group committed (or may have) without a NOTIFY after it: the next group that takes one settles it, or, if none
    // does within the interval, the timer sends it alone.
    private void Owe()
    {
        Volatile.Write(ref _owed, 1);
        if (Interlocked.Exchange(ref _timerArmed, 1) == 0)
        {
            _notifyTimer.Change(_notifyInterval, Timeout.InfiniteTimeSpan);
        }
    }

    private void SendOwedNotify()
    {
        Volatile.Write(ref _timerArmed, 0);
        if (Interlocked.Exchange(ref _owed, 0) == 1)
        {
            Volatile.Write(ref _lastNotify, Stopwatch.GetTimestamp());
            _notifier.Request(string.Empty);
        }
    }

    private static bool IsRetryable(PostgresException ex) =>
        ex.SqlState is PostgresErrorCodes.DeadlockDetected or PostgresErrorCodes.SerializationFailure;

    // Returns the connection to keep using, or null when it broke.
    private async Task<NpgsqlConnection?> RunGroupAsync(NpgsqlConnection? connection, IReadOnlyList<PendingAppend> group, Dictionary<string, int> seen)
    {
        try
        {
            connection ??= await _dataSource.OpenConnectionAsync().ConfigureAwait(false);
            var (members, outcomes) = await ExecuteAsync(connection, group, seen).ConfigureAwait(false);
            GroupSize.Record(group.Count);
            Complete(members, outcomes);
            return connection;
        }
        catch (PostgresException ex) when (connection is { State: System.Data.ConnectionState.Open } && (group.Count > 1 || IsRetryable(ex)))
        {
            // The group rolled back as a whole (a bad value in one member, or a deadlock with another transaction): give
            // every member its own transaction, so each caller gets its own outcome.
            Log.GroupFailed(_logger, ex, group.Count, "appends", ex.SqlState);
            return await RunOneByOneAsync(connection, group, seen).ConfigureAwait(false);
        }
        catch (Exception ex)
        {
            Log.WriterConnectionFailed(_logger, ex, group.Count);
            for (var i = 0; i < group.Count; i++)
            {
                group[i].Completion.TrySetException(ex);
            }

            if (connection is not null)
            {
                await connection.DisposeAsync().ConfigureAwait(false);
            }

            return null;
        }
    }

    private async Task<NpgsqlConnection?> RunOneByOneAsync(NpgsqlConnection connection, IReadOnlyList<PendingAppend> group, Dictionary<string, int> seen)
    {
        foreach (var pending in group)
        {
            for (var attempt = 1; ; attempt++)
            {
                try
                {
                    var (members, outcomes) = await ExecuteAsync(connection, [pending], seen).ConfigureAwait(false);
                    Complete(members, outcomes);
                    break;
                }
                catch (PostgresException ex) when (IsRetryable(ex) && attempt < MaxRetries)
                {
                }
                catch (Exception ex)
                {
                    pending.Completion.TrySetException(ex);
                    if (connection.State != System.Data.ConnectionState.Open)
                    {
                        foreach (var rest in group.SkipWhile(p => p != pending).Skip(1))
                        {
                            rest.Completion.TrySetException(ex);
                        }

                        await connection.DisposeAsync().ConfigureAwait(false);
                        return null;
                    }

                    break;
                }
            }
        }

        return connection;
    }

    // Splits the group into rounds in which every stream appears once (the k-th append to a stream goes to round k), so
    // each round is one set-based call and later rounds see the writes of earlier ones. A group of distinct streams (the
    // common case) is its own one round. seen: the writer's, empty between calls.
    private static List<IReadOnlyList<PendingAppend>> Rounds(IReadOnlyList<PendingAppend> group, Dictionary<string, int> seen)
    {
        var repeated = false;
        if (group.Count > 1)
        {
            foreach (var pending in group)
            {
                ref var count = ref CollectionsMarshal.GetValueRefOrAddDefault(seen, pending.Stream, out _);
                repeated |= count++ > 0;
            }

            seen.Clear();
        }

        if (!repeated)
        {
            return [group];
        }

        var rounds = new List<IReadOnlyList<PendingAppend>>();
        foreach (var pending in group)
        {
            ref var round = ref CollectionsMarshal.GetValueRefOrAddDefault(seen, pending.Stream, out _);
            if (round == rounds.Count)
            {
                rounds.Add(new List<PendingAppend>());
            }

            ((List<PendingAppend>)rounds[round++]).Add(pending);
        }

        seen.Clear();
        return rounds;
    }

    private async Task<(IReadOnlyList<PendingAppend> Members, AppendOutcome[] Outcomes)> ExecuteAsync(
        NpgsqlConnection connection, IReadOnlyList<PendingAppend> group, Dictionary<string, int> seen)
    {
        var recordedAt = _time.GetUtcNow().UtcDateTime;
        var rounds = Rounds(group, seen);
        await using var batch = new NpgsqlBatch(connection);
        var ordinal = 0;
        NpgsqlBatchCommand? last = null;
        foreach (var round in rounds)
        {
            batch.BatchCommands.Add(last = AppendCall.Create(_sql, round, ordinal, recordedAt));
            foreach (var member in round)
            {
                ordinal += member.Count;
            }
        }

        // No explicit transaction: PostgreSQL runs the appends in one implicit transaction, which the error barrier (a Sync)
        // after the last one commits. The NOTIFY behind it (when the group takes one) is a transaction of its own in the same round trip: kept out of
        // the appends' transaction, since PostgreSQL serialises notifying commits through their WAL flush, and sent here
        // rather than from another connection, which would cost every group a second round trip and a second backend's
        // wake-up. The results are only trusted once the reader is closed, after the commit.
        last!.AppendErrorBarrier = true;
        NpgsqlBatchCommand? notify = null;
        if (TakeNotify())
        {
            notify = new NpgsqlBatchCommand(_sql.NotifyAfterCommit);
            batch.BatchCommands.Add(notify);
        }

        // One round (distinct streams) answers for the group in its order; more are gathered round by round.
        List<PendingAppend>? members = rounds.Count == 1 ? null : new List<PendingAppend>(group.Count);
        var outcomes = rounds.Count == 1 ? null : new AppendOutcome[group.Count];
        var notified = false;
        try
        {
            var reader = await batch.ExecuteReaderAsync(CancellationToken.None).ConfigureAwait(false);
            await using (reader.ConfigureAwait(false))
            {
                for (var r = 0; r < rounds.Count; r++)
                {
                    if (r > 0)
                    {
                        await reader.NextResultAsync().ConfigureAwait(false);
                    }

                    if (!await reader.ReadAsync().ConfigureAwait(false))
                    {
                        throw new InvalidOperationException("The append function returned no row.");
                    }

                    var round = AppendOutcome.ReadRow(reader, rounds[r].Count);
                    if (members is null)
                    {
                        outcomes = round;
                    }
                    else
                    {
                        round.CopyTo(outcomes!, members.Count);
                        members.AddRange(rounds[r]);
                    }
                }

                try
                {
                    while (await reader.NextResultAsync().ConfigureAwait(false))
                    {
                    }

                    notified = notify is not null;
                }
                catch (PostgresException ex) when (notify is not null && ex.BatchCommand == notify)
                {
                    // Only the NOTIFY failed, after the appends committed: it is owed, and sent again below.
                    Log.NotifyFailed(_logger, ex, _sql.Channel);
                }
            }
        }
        finally
        {
            // A group that committed, or may have, without its NOTIFY after it (none taken, or the batch failed) owes one.
            if (!notified)
            {
                Owe();
            }
        }

        return (members ?? rounds[0], outcomes!);
    }

    private void Complete(IReadOnlyList<PendingAppend> members, AppendOutcome[] outcomes)
    {
        // Publish the highest committed position before any caller resumes, so a caller's next read of $all waits for it.
        var highest = 0L;
        foreach (var outcome in outcomes)
        {
            if (outcome.Succeeded)
            {
                highest = Math.Max(highest, outcome.Position);
            }
        }

        if (highest > 0)
        {
            _committed(highest);
        }

        for (var i = 0; i < members.Count; i++)
        {
            if (outcomes[i].Succeeded)
            {
                members[i].Completion.TrySetResult(outcomes[i].Result);
            }
            else
            {
                members[i].Completion.TrySetException(outcomes[i].ToException(members[i].Stream, members[i].Expected));
            }
        }
    }

    // One per writer slot of the committer: it keeps its connection from group to group, and opens a new one after a failure broke it.
    private sealed class Writer(AppendCoordinator owner) : IGroupCommitWriter<PendingAppend>
    {
        // The streams of the group being split into rounds, kept from group to group.
        private readonly Dictionary<string, int> _seen = new(StringComparer.Ordinal);
        private NpgsqlConnection? _connection;

        public async ValueTask CommitAsync(GroupCommitBatch<PendingAppend> batch) =>
            _connection = await owner.RunGroupAsync(_connection, batch.Items, _seen).ConfigureAwait(false);

        public ValueTask DisposeAsync() => _connection?.DisposeAsync() ?? ValueTask.CompletedTask;
    }
}
