using System.Threading.Channels;
using Microsoft.Extensions.Logging;
using Npgsql;

namespace Herald.Postgres.Transport;

/// <summary>
/// Sends the schema's queue NOTIFY after commits, in a transaction of its own that writes nothing. PostgreSQL serialises
/// the commits of notifying transactions under one lock held through their WAL flush; notifying outside the sends and
/// settlements lets their commits share WAL flushes (group commit) instead of queueing behind that lock. Requests coalesce
/// per queue: a queue already waiting for the next NOTIFY is not added again, and one statement notifies every waiting
/// queue. A NOTIFY already on its way does not cover a later commit (it may have been delivered before that commit was
/// visible), so such a commit waits for the next one. The notifying transaction does not wait for its own WAL flush: it
/// holds nothing a crash could lose but the wake-up, and consumers fall back to polling for wake-ups that are lost.
/// </summary>
internal sealed class QueueNotifier : IAsyncDisposable
{
    private readonly NpgsqlDataSource _dataSource;
    private readonly QueueSql _sql;
    private readonly ILogger _logger;
    private readonly Lock _gate = new();
    private readonly Channel<bool> _requests = Channel.CreateBounded<bool>(new BoundedChannelOptions(1)
    {
        FullMode = BoundedChannelFullMode.DropWrite,
        SingleReader = true,
    });

    private readonly Task _run;
    private HashSet<string> _waiting = new(StringComparer.Ordinal);
    private long _sent;

    public QueueNotifier(NpgsqlDataSource dataSource, QueueSql sql, ILogger logger)
    {
        _dataSource = dataSource;
        _sql = sql;
        _logger = logger;
        _run = Task.Run(RunAsync);
    }

    /// <summary>NOTIFY statements sent so far (tests check that requests coalesce).</summary>
    public long Sent => Interlocked.Read(ref _sent);

    /// <summary>Asks for a NOTIFY of the queue after a commit; returns at once.</summary>
    public void Request(string queue)
    {
        lock (_gate)
        {
            if (!_waiting.Add(queue))
            {
                return;
            }
        }

        _requests.Writer.TryWrite(true);
    }

    /// <summary>Asks for a NOTIFY of each queue after a commit; returns at once.</summary>
    public void Request(IEnumerable<string> queues)
    {
        var added = false;
        lock (_gate)
        {
            foreach (var queue in queues)
            {
                added |= _waiting.Add(queue);
            }
        }

        if (added)
        {
            _requests.Writer.TryWrite(true);
        }
    }

    /// <summary>Sends what was requested, then stops.</summary>
    public async ValueTask DisposeAsync()
    {
        _requests.Writer.TryComplete();
        await _run.ConfigureAwait(false);
    }

    private async Task RunAsync()
    {
        var sending = new HashSet<string>(StringComparer.Ordinal);
        while (await _requests.Reader.WaitToReadAsync().ConfigureAwait(false))
        {
            _requests.Reader.TryRead(out _);
            lock (_gate)
            {
                // Taken before sending: a request from now on waits for the next NOTIFY.
                (sending, _waiting) = (_waiting, sending);
            }

            if (sending.Count == 0)
            {
                continue;
            }

            var queues = sending.ToArray();
            sending.Clear();
            for (var attempt = 1; attempt <= 2; attempt++)
            {
                try
                {
                    await using var command = _dataSource.CreateCommand(_sql.Notify);
                    command.Parameters.Add(new NpgsqlParameter<string> { TypedValue = _sql.Channel });
                    command.Parameters.Add(new NpgsqlParameter<string[]> { TypedValue = queues });
                    await command.ExecuteNonQueryAsync().ConfigureAwait(false);
                    Interlocked.Increment(ref _sent);
                    break;
                }
                catch (Exception ex) when (ex is NpgsqlException or InvalidOperationException or TimeoutException)
                {
                    // Consumers elsewhere then wake on the next notification or their poll.
                    Log.NotifyFailed(_logger, ex, _sql.Channel);
                }
            }
        }
    }
}
