using System.Threading.Channels;
using Microsoft.Extensions.Logging;
using Npgsql;

namespace Herald.Postgres.Notifications;

/// <summary>
/// Sends a channel's NOTIFY after commits, in a transaction of its own that writes nothing: the queue's (one payload per
/// queue) after sends and settlements. (The event store's append coordinator sends its own in the append's round trip.) PostgreSQL serialises the commits of
/// notifying transactions under one lock held through their WAL flush; notifying outside the writing transactions lets
/// their commits share WAL flushes (group commit) instead of queueing behind that lock. Requests coalesce per payload: a
/// payload already waiting for the next NOTIFY is not added again, and one statement notifies every waiting payload. A
/// NOTIFY already on its way does not cover a later commit (it may have been delivered before that commit was visible),
/// so such a commit waits for the next one. The notifying transaction does not wait for its own WAL flush: it holds
/// nothing a crash could lose but the wake-up, and listeners fall back to polling for wake-ups that are lost.
/// </summary>
internal sealed class CommitNotifier : IAsyncDisposable
{
    private const string Notify = "SELECT set_config('synchronous_commit', 'off', true), count(pg_notify($1, p)) FROM unnest($2::text[]) AS p";

    private readonly NpgsqlDataSource _dataSource;
    private readonly string _channel;
    private readonly ILogger _logger;
    private readonly Lock _gate = new();
    private readonly Channel<bool> _requests = Channel.CreateBounded<bool>(new BoundedChannelOptions(1)
    {
        FullMode = BoundedChannelFullMode.DropWrite,
        SingleReader = true,
    });

    private readonly Task _run;
    private HashSet<string> _waiting = new(StringComparer.Ordinal);

    public CommitNotifier(NpgsqlDataSource dataSource, string channel, ILogger logger)
    {
        _dataSource = dataSource;
        _channel = channel;
        _logger = logger;
        _run = Task.Run(RunAsync);
    }

    /// <summary>Asks for a NOTIFY with <paramref name="payload"/> after a commit; returns at once.</summary>
    public void Request(string payload)
    {
        lock (_gate)
        {
            if (!_waiting.Add(payload))
            {
                return;
            }
        }

        _requests.Writer.TryWrite(true);
    }

    /// <summary>Asks for a NOTIFY with each payload after a commit; returns at once.</summary>
    public void Request(IEnumerable<string> payloads)
    {
        var added = false;
        lock (_gate)
        {
            foreach (var payload in payloads)
            {
                added |= _waiting.Add(payload);
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
        NpgsqlConnection? connection = null;
        try
        {
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

                var payloads = sending.ToArray();
                sending.Clear();
                connection = await SendAsync(connection, payloads).ConfigureAwait(false);
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
    private async Task<NpgsqlConnection?> SendAsync(NpgsqlConnection? connection, string[] payloads)
    {
        for (var attempt = 1; attempt <= 2; attempt++)
        {
            try
            {
                connection ??= await _dataSource.OpenConnectionAsync().ConfigureAwait(false);
                await using var command = new NpgsqlCommand(Notify, connection);
                command.Parameters.Add(new NpgsqlParameter<string> { TypedValue = _channel });
                command.Parameters.Add(new NpgsqlParameter<string[]> { TypedValue = payloads });
                await command.ExecuteNonQueryAsync().ConfigureAwait(false);
                break;
            }
            catch (PostgresException ex) when (payloads.Length > 1)
            {
                // The server refused a payload (one of 8,000 bytes or more, a queue's long name): the statement notified none,
                // so each goes alone and the others still wake their listeners. The connection is still good.
                Log.NotifyFailed(_logger, ex, _channel);
                foreach (var payload in payloads)
                {
                    connection = await SendAsync(connection, [payload]).ConfigureAwait(false);
                }

                break;
            }
            catch (Exception ex)
            {
                // Whatever failed, the loop goes on (it ends only with the store): listeners elsewhere then wake on the next
                // notification or their poll. A request is tried twice at most, so a failure that repeats cannot spin here.
                Log.NotifyFailed(_logger, ex, _channel);
                if (connection is not null)
                {
                    await connection.DisposeAsync().ConfigureAwait(false);
                    connection = null;
                }
            }
        }

        return connection;
    }
}
