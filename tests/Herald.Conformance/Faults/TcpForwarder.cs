using System.Net;
using System.Net.Sockets;

namespace Herald.Conformance.Faults;

/// <summary>
/// Forwards connections from a port of its own on 127.0.0.1 to a server: a client pointed at <see cref="Port"/> loses the
/// server when the forwarder is disposed (listener and every connection closed), while the shared server keeps running.
/// </summary>
public sealed class TcpForwarder : IAsyncDisposable
{
    private readonly TcpListener _listener = new(IPAddress.Loopback, 0);
    private readonly int _targetPort;
    private readonly CancellationTokenSource _stop = new();
    private readonly List<TcpClient> _connections = [];
    private readonly Task _accepting;
    private readonly TaskCompletionSource _accepted = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private volatile bool _frozen;
    private volatile bool _refusing;
    private volatile TaskCompletionSource _released = Released();
    private int _open;
    private long _fromServer;

    public TcpForwarder(int targetPort)
    {
        _targetPort = targetPort;
        _listener.Start();
        Port = ((IPEndPoint)_listener.LocalEndpoint).Port;
        _accepting = AcceptAsync();
    }

    /// <summary>The port to point a client at.</summary>
    public int Port { get; }

    /// <summary>
    /// Drops everything either side sends from now on while keeping every connection open, as a network path that died
    /// silently: neither the client nor the server hears of it until a timeout of its own.
    /// </summary>
    public void Freeze() => _frozen = true;

    /// <summary>
    /// Closes every connection and refuses new ones until <see cref="Restore"/>: the client is cut off from the server (and
    /// knows it), while anything else may still change the server behind its back.
    /// </summary>
    public void Cut()
    {
        _refusing = true;
        CloseConnections();
    }

    /// <summary>Accepts connections again after <see cref="Cut"/>.</summary>
    public void Restore() => _refusing = false;

    /// <summary>Keeps what either side sends from now on until <see cref="Release"/>, then forwards it: a server slow to answer.</summary>
    public void Hold() => _released = new(TaskCreationOptions.RunContinuationsAsynchronously);

    /// <summary>Forwards what <see cref="Hold"/> kept, and everything after it.</summary>
    public void Release() => _released.TrySetResult();

    /// <summary>Completes when the first client connection is accepted.</summary>
    public Task Accepted => _accepted.Task;

    /// <summary>Client connections accepted and not closed yet.</summary>
    public int OpenConnections => Volatile.Read(ref _open);

    /// <summary>The bytes forwarded from the server to clients.</summary>
    public long BytesFromServer => Interlocked.Read(ref _fromServer);

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync();
        _listener.Stop();
        CloseConnections();

        try
        {
            await _accepting;
        }
        catch (OperationCanceledException)
        {
        }

        _stop.Dispose();
    }

    private async Task AcceptAsync()
    {
        while (!_stop.IsCancellationRequested)
        {
            TcpClient client;
            try
            {
                client = await _listener.AcceptTcpClientAsync(_stop.Token);
            }
            catch (Exception) when (_stop.IsCancellationRequested)
            {
                return;
            }

            if (_refusing)
            {
                client.Dispose();
                continue;
            }

            var server = new TcpClient();
            try
            {
                await server.ConnectAsync(IPAddress.Loopback, _targetPort, _stop.Token);
            }
            catch (Exception)
            {
                client.Dispose();
                server.Dispose();
                continue;
            }

            lock (_connections)
            {
                if (_stop.IsCancellationRequested)
                {
                    client.Dispose();
                    server.Dispose();
                    return;
                }

                _connections.Add(client);
                _connections.Add(server);
            }

            Interlocked.Increment(ref _open);
            _accepted.TrySetResult();
            _ = PumpAsync(client, server, fromClient: true);
            _ = PumpAsync(server, client, fromClient: false);
        }
    }

    private void CloseConnections()
    {
        lock (_connections)
        {
            foreach (var connection in _connections)
            {
                connection.Dispose();
            }

            _connections.Clear();
        }
    }

    private static TaskCompletionSource Released()
    {
        var released = new TaskCompletionSource();
        released.SetResult();
        return released;
    }

    private async Task PumpAsync(TcpClient from, TcpClient to, bool fromClient)
    {
        try
        {
            var source = from.GetStream();
            var target = to.GetStream();
            var buffer = new byte[16 * 1024];
            int read;
            while ((read = await source.ReadAsync(buffer, _stop.Token)) > 0)
            {
                await _released.Task.WaitAsync(_stop.Token);
                if (!_frozen)
                {
                    await target.WriteAsync(buffer.AsMemory(0, read), _stop.Token);
                    if (!fromClient)
                    {
                        Interlocked.Add(ref _fromServer, read);
                    }
                }
            }
        }
        catch (Exception)
        {
            // A closed side: the connection ends.
        }

        if (fromClient)
        {
            // The client closed (or the server did, which ends this side too).
            Interlocked.Decrement(ref _open);
        }

        from.Dispose();
        to.Dispose();
    }
}
