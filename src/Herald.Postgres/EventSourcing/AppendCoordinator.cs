using System.Diagnostics.Metrics;
using System.Threading.Channels;
using Herald.Diagnostics;
using Herald.EventSourcing;
using Herald.Postgres.Notifications;
using Microsoft.Extensions.Logging;
using Npgsql;

namespace Herald.Postgres.EventSourcing;

/// <summary>
/// Groups concurrent appends into shared commits (ADR 0001, "the append coordinator"). Callers queue their appends in a
/// bounded channel; each writer loop takes whatever is waiting (up to a count and an event budget, never waiting for more)
/// and sends it as one batch, which PostgreSQL runs as one implicit transaction: one round trip, one commit. Inside, one
/// set-based call of the append function per round of distinct streams locks the streams' rows, checks each member's
/// expected version and idempotency, and writes the members that pass. A member that fails its check writes nothing and
/// gets its <see cref="ConcurrencyException"/>; the others commit. That takes no savepoint per member, so a large group
/// never overflows PostgreSQL's subtransaction cache. A group is one transaction, so its events share a transaction id and
/// are contiguous in <c>$all</c>, ordered by the ordinals assigned here. After the commit a <see cref="CommitNotifier"/>
/// wakes readers on other nodes.
/// </summary>
internal sealed class AppendCoordinator : IAsyncDisposable
{
    /// <summary>Events one append may hold, so a group (budget plus one append) stays below 2^20 ordinals.</summary>
    public const int MaxEventsPerAppend = 500_000;

    /// <summary>Name of the histogram of appends per grouped commit (on Herald's meter).</summary>
    public const string GroupSizeMetric = "herald.event_store.append_group.size";

    private const int MaxRetries = 3;

    private static readonly Histogram<int> GroupSize =
        HeraldDiagnostics.Meter.CreateHistogram<int>(GroupSizeMetric, "{append}", "Appends committed together in one transaction by the PostgreSQL append coordinator.");

    private readonly NpgsqlDataSource _dataSource;
    private readonly EventStoreSql _sql;
    private readonly int _maxAppends;
    private readonly int _maxEvents;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;
    private readonly Action<long> _committed;
    private readonly CommitNotifier _notifier;
    private readonly Channel<PendingAppend> _queue;
    private readonly Task[] _writers;

    public AppendCoordinator(NpgsqlDataSource dataSource, EventStoreSql sql, PostgresStoreOptions options, TimeProvider time, ILogger logger, Action<long> committed)
    {
        _dataSource = dataSource;
        _sql = sql;
        _maxAppends = options.MaxAppendsPerCommit;
        _maxEvents = Math.Min(options.MaxEventsPerCommit, MaxEventsPerAppend);
        _time = time;
        _logger = logger;
        _committed = committed;
        _notifier = new CommitNotifier(dataSource, sql.Channel, logger);
        _queue = Channel.CreateBounded<PendingAppend>(new BoundedChannelOptions(options.AppendQueueCapacity)
        {
            FullMode = BoundedChannelFullMode.Wait,
            SingleReader = options.AppendWriters == 1,
        });
        _writers = new Task[options.AppendWriters];
        for (var i = 0; i < _writers.Length; i++)
        {
            _writers[i] = Task.Run(WriteLoopAsync);
        }
    }

    /// <summary>Queues the append and completes with its result or its exception once its group has committed.</summary>
    public async Task<AppendResult> AppendAsync(PendingAppend pending, CancellationToken cancellationToken)
    {
        try
        {
            await _queue.Writer.WriteAsync(pending, cancellationToken).ConfigureAwait(false);
        }
        catch (ChannelClosedException)
        {
            throw new ObjectDisposedException(nameof(PostgresEventStore), "The event store was disposed; the append was not made.");
        }

        // A cancellation after this point may still let the append commit, as with any database call: retry it with the
        // same event ids, which is idempotent.
        return await pending.Completion.Task.WaitAsync(cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Stops taking appends, commits those already queued and waits for the writer loops to end.</summary>
    public async ValueTask DisposeAsync()
    {
        _queue.Writer.TryComplete();
        await Task.WhenAll(_writers).ConfigureAwait(false);
        await _notifier.DisposeAsync().ConfigureAwait(false);
    }

    private static bool IsRetryable(PostgresException ex) =>
        ex.SqlState is PostgresErrorCodes.DeadlockDetected or PostgresErrorCodes.SerializationFailure;

    private async Task WriteLoopAsync()
    {
        var group = new List<PendingAppend>(_maxAppends);
        NpgsqlConnection? connection = null;
        try
        {
            while (await _queue.Reader.WaitToReadAsync().ConfigureAwait(false))
            {
                group.Clear();
                var events = 0;
                while (group.Count < _maxAppends && _queue.Reader.TryPeek(out var next)
                       && (group.Count == 0 || events + next.Count <= _maxEvents) && _queue.Reader.TryRead(out next))
                {
                    if (next.CancellationToken.IsCancellationRequested)
                    {
                        next.Completion.TrySetCanceled(next.CancellationToken);
                        continue;
                    }

                    group.Add(next);
                    events += next.Count;
                }

                if (group.Count > 0)
                {
                    connection = await RunGroupAsync(connection, group).ConfigureAwait(false);
                }
            }
        }
        finally
        {
            if (connection is not null)
            {
                await connection.DisposeAsync().ConfigureAwait(false);
            }
        }
    }

    // Returns the connection to keep using, or null when it broke.
    private async Task<NpgsqlConnection?> RunGroupAsync(NpgsqlConnection? connection, List<PendingAppend> group)
    {
        try
        {
            connection ??= await _dataSource.OpenConnectionAsync().ConfigureAwait(false);
            var (members, outcomes) = await ExecuteAsync(connection, group).ConfigureAwait(false);
            GroupSize.Record(group.Count);
            Complete(members, outcomes);
            return connection;
        }
        catch (PostgresException ex) when (connection is { State: System.Data.ConnectionState.Open } && (group.Count > 1 || IsRetryable(ex)))
        {
            // The group rolled back as a whole (a bad value in one member, or a deadlock with another transaction): give
            // every member its own transaction, so each caller gets its own outcome.
            Log.GroupFailed(_logger, ex, group.Count, ex.SqlState);
            return await RunOneByOneAsync(connection, group).ConfigureAwait(false);
        }
        catch (Exception ex)
        {
            Log.WriterConnectionFailed(_logger, ex, group.Count);
            foreach (var pending in group)
            {
                pending.Completion.TrySetException(ex);
            }

            if (connection is not null)
            {
                await connection.DisposeAsync().ConfigureAwait(false);
            }

            return null;
        }
    }

    private async Task<NpgsqlConnection?> RunOneByOneAsync(NpgsqlConnection connection, List<PendingAppend> group)
    {
        foreach (var pending in group)
        {
            for (var attempt = 1; ; attempt++)
            {
                try
                {
                    var (members, outcomes) = await ExecuteAsync(connection, [pending]).ConfigureAwait(false);
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
    // each round is one set-based call and later rounds see the writes of earlier ones.
    private static List<List<PendingAppend>> Rounds(IReadOnlyList<PendingAppend> group)
    {
        var rounds = new List<List<PendingAppend>> { new(group.Count) };
        if (group.Count == 1)
        {
            rounds[0].Add(group[0]);
            return rounds;
        }

        var seen = new Dictionary<string, int>(group.Count, StringComparer.Ordinal);
        foreach (var pending in group)
        {
            seen.TryGetValue(pending.Stream, out var round);
            seen[pending.Stream] = round + 1;
            if (round == rounds.Count)
            {
                rounds.Add([]);
            }

            rounds[round].Add(pending);
        }

        return rounds;
    }

    private async Task<(List<PendingAppend> Members, AppendOutcome[] Outcomes)> ExecuteAsync(NpgsqlConnection connection, IReadOnlyList<PendingAppend> group)
    {
        var recordedAt = _time.GetUtcNow().UtcDateTime;
        var rounds = Rounds(group);
        await using var batch = new NpgsqlBatch(connection);
        var ordinal = 0;
        foreach (var round in rounds)
        {
            batch.BatchCommands.Add(AppendCall.Create(_sql, round, ordinal, recordedAt));
            foreach (var member in round)
            {
                ordinal += member.Count;
            }
        }

        // No explicit transaction: PostgreSQL runs the whole batch in one implicit transaction that commits at its end, so
        // the group costs one round trip. The results are only trusted once the reader is closed, after the commit.
        var members = new List<PendingAppend>(group.Count);
        var outcomes = new AppendOutcome[group.Count];
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
                round.CopyTo(outcomes, members.Count);
                members.AddRange(rounds[r]);
            }

            while (await reader.NextResultAsync().ConfigureAwait(false))
            {
            }
        }

        return (members, outcomes);
    }

    private void Complete(IReadOnlyList<PendingAppend> members, AppendOutcome[] outcomes)
    {
        // Publish the highest committed position before any caller resumes, so a caller's next read of $all waits for it.
        var highest = 0L;
        var wrote = false;
        foreach (var outcome in outcomes)
        {
            if (outcome.Succeeded)
            {
                highest = Math.Max(highest, outcome.Position);
                wrote |= outcome.Status == AppendOutcome.Appended;
            }
        }

        if (wrote)
        {
            _notifier.Request(string.Empty);
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
}
