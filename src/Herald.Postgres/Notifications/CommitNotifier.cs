using System.Threading.Channels;
using Microsoft.Extensions.Logging;
using Npgsql;

namespace Herald.Postgres.Notifications;

/// <summary>
/// Sends the schema's NOTIFY after grouped commits, in a transaction of its own that writes nothing. PostgreSQL serialises
/// the commits of notifying transactions under one lock held through their WAL flush; notifying outside the append
/// transactions lets grouped commits overlap. Requests coalesce: one NOTIFY covers every commit made before it is sent.
/// </summary>
internal sealed class CommitNotifier : IAsyncDisposable
{
    private readonly NpgsqlDataSource _dataSource;
    private readonly string _channel;
    private readonly ILogger _logger;
    private readonly Channel<bool> _requests = Channel.CreateBounded<bool>(new BoundedChannelOptions(1)
    {
        FullMode = BoundedChannelFullMode.DropWrite,
        SingleReader = true,
    });

    private readonly Task _run;

    public CommitNotifier(NpgsqlDataSource dataSource, string channel, ILogger logger)
    {
        _dataSource = dataSource;
        _channel = channel;
        _logger = logger;
        _run = Task.Run(RunAsync);
    }

    /// <summary>Asks for a NOTIFY after a commit; returns at once.</summary>
    public void Request() => _requests.Writer.TryWrite(true);

    /// <summary>Sends what was requested, then stops.</summary>
    public async ValueTask DisposeAsync()
    {
        _requests.Writer.TryComplete();
        await _run.ConfigureAwait(false);
    }

    private async Task RunAsync()
    {
        NpgsqlConnection? connection = null;
        try
        {
            while (await _requests.Reader.WaitToReadAsync().ConfigureAwait(false))
            {
                _requests.Reader.TryRead(out _);
                for (var attempt = 1; attempt <= 2; attempt++)
                {
                    try
                    {
                        connection ??= await _dataSource.OpenConnectionAsync().ConfigureAwait(false);
                        await using var notify = new NpgsqlCommand("SELECT pg_notify($1, '')", connection);
                        notify.Parameters.Add(new NpgsqlParameter<string> { TypedValue = _channel });
                        await notify.ExecuteNonQueryAsync().ConfigureAwait(false);
                        break;
                    }
                    catch (Exception ex) when (ex is NpgsqlException or InvalidOperationException or TimeoutException)
                    {
                        // Readers on other nodes then wake on the next notification or their fallback re-check.
                        Log.NotifyFailed(_logger, ex, _channel);
                        if (connection is not null)
                        {
                            await connection.DisposeAsync().ConfigureAwait(false);
                            connection = null;
                        }
                    }
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
}
