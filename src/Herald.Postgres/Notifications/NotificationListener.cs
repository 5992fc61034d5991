using Microsoft.Extensions.Logging;
using Npgsql;

namespace Herald.Postgres.Notifications;

/// <summary>
/// Holds one connection that LISTENs on a channel and hands every notification's payload to a callback. It reconnects
/// when the connection drops; while it is down, <see cref="IsListening"/> is false and waiting readers poll instead, and
/// every (re)connect calls back with null, since notifications sent meanwhile are lost.
/// </summary>
internal sealed class NotificationListener : IAsyncDisposable
{
    private static readonly TimeSpan MaxReconnectDelay = TimeSpan.FromSeconds(5);
    private static readonly TimeSpan KeepAliveInterval = TimeSpan.FromSeconds(30);

    private readonly NpgsqlDataSource _dataSource;
    private readonly string _channel;
    private readonly Action<string?> _notify;
    private readonly TimeSpan _reconnectDelay;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;
    private readonly CancellationTokenSource _stopping = new();
    private readonly Lock _gate = new();
    private Task? _run;
    private volatile bool _listening;
    private int _processId;
    private int _connects;

    /// <summary>
    /// Listens and calls <paramref name="notify"/> with each notification's payload, and with null after a (re)connect or a
    /// failure, when notifications may have been missed and anything may have changed.
    /// </summary>
    public NotificationListener(NpgsqlDataSource dataSource, string channel, Action<string?> notify, TimeSpan reconnectDelay, TimeProvider time, ILogger logger)
    {
        _dataSource = dataSource;
        _channel = channel;
        _notify = notify;
        // A first delay past the cap (a TimeSpan.MaxValue passes validation) is the cap: longer, the first wait threw and the
        // listener stopped for good, its DisposeAsync throwing too.
        _reconnectDelay = reconnectDelay < MaxReconnectDelay ? reconnectDelay : MaxReconnectDelay;
        _time = time;
        _logger = logger;
    }

    /// <summary>True while the LISTEN connection is up, so every append's notification arrives.</summary>
    public bool IsListening => _listening;

    /// <summary>The backend process id of the current LISTEN connection (0 when down); tests terminate it.</summary>
    public int ProcessId => Volatile.Read(ref _processId);

    /// <summary>How many times the connection was (re)established.</summary>
    public int Connects => Volatile.Read(ref _connects);

    /// <summary>Starts listening in the background on the first call; later calls do nothing.</summary>
    public void EnsureStarted()
    {
        if (Volatile.Read(ref _run) is not null)
        {
            return;
        }

        lock (_gate)
        {
            if (_run is null && !_stopping.IsCancellationRequested)
            {
                _run = Task.Run(() => RunAsync(_stopping.Token));
            }
        }
    }

    public async ValueTask DisposeAsync()
    {
        Task? run;
        lock (_gate)
        {
            run = _run;
            _stopping.Cancel();
        }

        if (run is not null)
        {
            await run.ConfigureAwait(false);
        }

        _stopping.Dispose();
    }

    private async Task RunAsync(CancellationToken stopping)
    {
        var delay = _reconnectDelay;
        var connectsBefore = Connects;
        while (!stopping.IsCancellationRequested)
        {
            try
            {
                await ListenAsync(stopping).ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (stopping.IsCancellationRequested)
            {
                break;
            }
            catch (Exception ex)
            {
                // Back off while reconnecting fails; start from the first delay again after a connection that worked.
                if (Connects != connectsBefore)
                {
                    connectsBefore = Connects;
                    delay = _reconnectDelay;
                }

                _listening = false;
                Volatile.Write(ref _processId, 0);
                _notify(null);
                Log.ListenerFailed(_logger, ex, _channel, delay);
                try
                {
                    await Task.Delay(delay, _time, stopping).ConfigureAwait(false);
                }
                catch (OperationCanceledException)
                {
                    break;
                }

                delay = TimeSpan.FromTicks(Math.Min(delay.Ticks * 2, MaxReconnectDelay.Ticks));
            }
        }

        _listening = false;
    }

    private async Task ListenAsync(CancellationToken stopping)
    {
        var connection = await _dataSource.OpenConnectionAsync(stopping).ConfigureAwait(false);
        await using (connection.ConfigureAwait(false))
        {
            connection.Notification += (_, e) => _notify(e.Payload);
            await using (var listen = new NpgsqlCommand($"LISTEN \"{_channel}\"", connection))
            {
                await listen.ExecuteNonQueryAsync(stopping).ConfigureAwait(false);
            }

            Volatile.Write(ref _processId, connection.ProcessID);
            Interlocked.Increment(ref _connects);
            _listening = true;
            Log.Listening(_logger, _channel, connection.ProcessID);

            // Appends committed while no connection was listening sent notifications nobody received.
            _notify(null);
            try
            {
                while (true)
                {
                    if (!await connection.WaitAsync(KeepAliveInterval, stopping).ConfigureAwait(false))
                    {
                        // Nothing arrived for a while: prove the connection still works, so a silent drop is noticed.
                        await using var ping = new NpgsqlCommand("SELECT 1", connection);
                        await ping.ExecuteScalarAsync(stopping).ConfigureAwait(false);
                    }
                }
            }
            finally
            {
                _listening = false;
                Volatile.Write(ref _processId, 0);
            }
        }
    }
}
