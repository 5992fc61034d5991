using System.Net;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Herald.Internal;
using StackExchange.Redis;

namespace Herald.Redis.Internal;

/// <summary>
/// The one connection (multiplexer) Herald's Redis stores share. It connects on first use or at host start, whichever
/// comes first; a connection that cannot be made throws naming the servers, and the next use tries again.
/// </summary>
internal sealed class RedisConnection : IServerProbe, IAsyncDisposable, IDisposable
{
    private readonly ConfigurationOptions? _configuration;
    private readonly bool _owned;
    private readonly ILogger _logger;
    // Never disposed: a connect running at dispose still releases it (it has no wait handle to free).
    private readonly SemaphoreSlim _gate = new(1, 1);
    private volatile IConnectionMultiplexer? _multiplexer;
    private int _disposed;

    private RedisConnection(ConfigurationOptions? configuration, IConnectionMultiplexer? multiplexer, ILogger? logger)
    {
        _configuration = configuration;
        _multiplexer = multiplexer;
        _owned = multiplexer is null;
        _logger = logger ?? NullLogger.Instance;
    }

    /// <summary>Over the options' existing multiplexer, or one opened from their configuration string.</summary>
    public static RedisConnection Create(RedisOptions options, ILogger? logger = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        if (options.ConnectionMultiplexer is { } given)
        {
            return new RedisConnection(null, given, logger);
        }

        ArgumentException.ThrowIfNullOrWhiteSpace(options.Configuration);
        var configuration = ConfigurationOptions.Parse(options.Configuration);
        configuration.SetDefaultPorts();

        // Fail at once instead of retrying in the background: a wrong host should stop the start, not hide behind it.
        configuration.AbortOnConnectFail = true;
        return new RedisConnection(configuration, null, logger);
    }

    /// <summary>The servers this connection talks to, as "host:port" (for messages; never the password).</summary>
    public string Endpoints => _multiplexer is { } multiplexer
        ? Describe(multiplexer.GetEndPoints())
        : Describe(_configuration!.EndPoints);

    public async ValueTask<IDatabase> GetDatabaseAsync(CancellationToken cancellationToken)
    {
        var multiplexer = _multiplexer ?? await ConnectAsync(cancellationToken).ConfigureAwait(false);
        return multiplexer.GetDatabase();
    }

    string IServerProbe.Name => $"Redis at {Endpoints}";

    /// <summary>For the health check: connects unless connected, then PINGs the server.</summary>
    async ValueTask IServerProbe.ProbeAsync(CancellationToken cancellationToken)
    {
        var database = await GetDatabaseAsync(cancellationToken).ConfigureAwait(false);

        // The client's commands take no token: the caller's deadline ends the wait, the PING then fails on its own timeout.
        await database.PingAsync().WaitAsync(cancellationToken).ConfigureAwait(false);
    }

    /// <summary>Connects unless connected; throws <see cref="HeraldException"/> naming the servers when it cannot.</summary>
    public async ValueTask<IConnectionMultiplexer> ConnectAsync(CancellationToken cancellationToken)
    {
        if (_multiplexer is { } connected)
        {
            return connected;
        }

        await _gate.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            if (_multiplexer is { } raced)
            {
                return raced;
            }

            ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) != 0, this);

            ConnectionMultiplexer multiplexer;
            var connecting = ConnectionMultiplexer.ConnectAsync(_configuration!);
            try
            {
                multiplexer = await connecting.WaitAsync(cancellationToken).ConfigureAwait(false);
            }
            catch (OperationCanceledException) when (cancellationToken.IsCancellationRequested)
            {
                // The client's connect takes no token and goes on: what it opens is closed, since no one will hold it.
                _ = CloseAbandonedAsync(connecting);
                throw;
            }
            catch (RedisException ex)
            {
                throw new HeraldException(
                    $"Herald could not connect to Redis at {Endpoints}. Check that the server runs and that the host, port and password " +
                    "of the configuration are right.", ex);
            }

            // Disposed during the connect: a full fence each side (here the store, in dispose the flag), so either dispose
            // takes this multiplexer or this sees the flag; whichever takes it from the field closes it.
            Interlocked.Exchange(ref _multiplexer, multiplexer);
            if (Volatile.Read(ref _disposed) != 0)
            {
                if (Interlocked.Exchange(ref _multiplexer, null) is { } opened)
                {
                    await opened.DisposeAsync().ConfigureAwait(false);
                }

                throw new ObjectDisposedException(GetType().FullName);
            }

            Herald.Internal.AdapterLog.Connected(_logger, "Redis", Endpoints);
            return multiplexer;
        }
        finally
        {
            _gate.Release();
        }
    }

    private static async Task CloseAbandonedAsync(Task<ConnectionMultiplexer> connecting)
    {
        try
        {
            await (await connecting.ConfigureAwait(false)).DisposeAsync().ConfigureAwait(false);
        }
        catch (Exception)
        {
            // A connect that failed opened nothing; its failure is no one's to hear now (the caller was answered cancelled).
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (TakeOwnedOnDispose() is { } multiplexer)
        {
            await multiplexer.DisposeAsync().ConfigureAwait(false);
        }
    }

    // A container disposed synchronously still closes the connection Herald opened.
    public void Dispose() => TakeOwnedOnDispose()?.Dispose();

    // Marks the connection disposed, then takes the multiplexer Herald opened (null if none, or if the options gave it):
    // a connect still running sees the mark and closes what it opens itself.
    private IConnectionMultiplexer? TakeOwnedOnDispose() =>
        Interlocked.Exchange(ref _disposed, 1) == 0 && _owned ? Interlocked.Exchange(ref _multiplexer, null) : null;

    private static string Describe(IEnumerable<EndPoint> endpoints) => string.Join(", ", endpoints.Select(endpoint => endpoint switch
    {
        DnsEndPoint dns => dns.Port == 0 ? dns.Host : $"{dns.Host}:{dns.Port}",
        _ => endpoint.ToString(),
    }));
}
