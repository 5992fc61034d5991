using Herald.EventSourcing;
using Herald.Internal;
using Herald.Postgres.Internal;
using Herald.Postgres.Notifications;
using Herald.Postgres.Schema;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using Npgsql;

namespace Herald.Postgres.EventSourcing;

/// <summary>
/// The event store, checkpoint store and snapshot store on PostgreSQL. The global log is gap-free by transaction
/// visibility (docs/adr/0001): readers only see events of transactions older than every open one, so a catch-up
/// subscription never skips an event that commits late. Concurrent appends are grouped into shared commits.
/// Create it with <see cref="CreateAsync(string, PostgresStoreOptions?, CancellationToken)"/> or <c>UsePostgres</c>.
/// </summary>
internal sealed partial class PostgresEventStore : IEventStoreConnection, IDisposable
{
    private readonly NpgsqlDataSource _dataSource;
    private readonly bool _ownsDataSource;
    private readonly PostgresStoreOptions _options;
    private readonly TimeProvider _time;
    private readonly ILogger _logger;
    // The clock of the waits for the log to move (horizon re-checks, the notification fallback, the wait for this store's own
    // appends, the listener's reconnect delay): the real one. The store's TimeProvider stamps rows; under a fake clock (the
    // container's, which UsePostgres takes) those waits ended only when someone moved it, so a reader held back by a
    // transaction that ended without a notification, or left without its listener, stalled for good.
    private static readonly TimeProvider WakeClock = TimeProvider.System;

    private readonly PositionSignal _changes = new();
    private readonly Lock _gate = new();
    private Task<Runtime>? _starting;
    private Runtime? _runtime;
    private NotificationListener? _listener;
    private bool _disposed;

    private PostgresEventStore(NpgsqlDataSource dataSource, bool ownsDataSource, PostgresStoreOptions options)
    {
        _dataSource = dataSource;
        _ownsDataSource = ownsDataSource;
        _options = options;
        _time = options.TimeProvider ?? TimeProvider.System;
        _logger = (options.LoggerFactory ?? NullLoggerFactory.Instance).CreateLogger("Herald.Postgres.EventStore");
    }

    /// <summary>The schema the store's tables live in.</summary>
    public string Schema => _options.Schema;

    /// <summary>The schema-qualified, quoted name of the table <paramref name="name"/> of this store's schema, for SQL text.</summary>
    internal string Table(string name) => Migrations.Quote(Schema) + "." + name;

    /// <summary>The clock the store and the stores sharing its schema stamp their rows with.</summary>
    internal TimeProvider TimeProvider => _time;

    internal NotificationListener? Listener => Volatile.Read(ref _listener);

    /// <summary>
    /// Creates the store on its own connection pool and brings its schema up to date (created on first use, migrated
    /// under an advisory lock). Dispose the store to close the pool.
    /// </summary>
    public static Task<PostgresEventStore> CreateAsync(string connectionString, PostgresStoreOptions? options = null, CancellationToken cancellationToken = default) =>
        Components.StartOrDisposeAsync(Create(connectionString, options), static (store, ct) => store.StartAsync(ct), cancellationToken);

    /// <summary>
    /// Creates the store on a data source the caller owns (and disposes after the store) and brings its schema up to date.
    /// </summary>
    public static Task<PostgresEventStore> CreateAsync(NpgsqlDataSource dataSource, PostgresStoreOptions? options = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(dataSource);
        return Components.StartOrDisposeAsync(new PostgresEventStore(dataSource, ownsDataSource: false, Validated(options)), static (store, ct) => store.StartAsync(ct), cancellationToken);
    }

    /// <summary>Brings the schema up to date and starts the append coordinator; every operation also does it on first use.</summary>
    public Task StartAsync(CancellationToken cancellationToken = default) => GetRuntimeAsync(cancellationToken).AsTask();

    /// <summary>Commits the appends already queued, stops listening and closes the connection pool if the store owns it.</summary>
    public async ValueTask DisposeAsync()
    {
        Task<Runtime>? starting;
        NotificationListener? listener;
        lock (_gate)
        {
            if (_disposed)
            {
                return;
            }

            _disposed = true;
            starting = _starting;
            listener = _listener;
        }

        // Waiting readers wake up and find the store disposed.
        _changes.Pulse();

        if (starting is not null)
        {
            try
            {
                var runtime = await starting.ConfigureAwait(false);
                await runtime.Coordinator.DisposeAsync().ConfigureAwait(false);
            }
            catch (Exception ex) when (ex is not OutOfMemoryException)
            {
                // A store that never started has nothing to stop.
            }
        }

        if (listener is not null)
        {
            await listener.DisposeAsync().ConfigureAwait(false);
        }

        if (_ownsDataSource)
        {
            await _dataSource.DisposeAsync().ConfigureAwait(false);
        }
    }

    /// <summary>Disposes synchronously (see <see cref="DisposeAsync"/>), for containers that dispose that way.</summary>
    public void Dispose() => DisposeAsync().AsTask().GetAwaiter().GetResult();

    /// <summary>Creates the store on its own pool without touching the database yet (the DI path; it starts on first use).</summary>
    internal static PostgresEventStore Create(string connectionString, PostgresStoreOptions? options)
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(connectionString);
        var validated = Validated(options);
        var builder = PooledDataSource.Builder(connectionString, "herald", validated.LoggerFactory);
        return new PostgresEventStore(builder.Build(), ownsDataSource: true, validated);
    }

    private static PostgresStoreOptions Validated(PostgresStoreOptions? options)
    {
        var copy = (options ?? new PostgresStoreOptions()).Clone();
        copy.Validate();
        return copy;
    }

    private ValueTask<Runtime> GetRuntimeAsync(CancellationToken cancellationToken)
    {
        var runtime = Volatile.Read(ref _runtime);
        return runtime is not null ? ValueTask.FromResult(runtime) : new ValueTask<Runtime>(StartSlowAsync(cancellationToken));
    }

    private async Task<Runtime> StartSlowAsync(CancellationToken cancellationToken)
    {
        Task<Runtime> starting;
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (_starting is null || _starting.IsFaulted || _starting.IsCanceled)
            {
                // Not bound to the first caller's token: other callers share this start.
                _starting = StartCoreAsync();
            }

            starting = _starting;
        }

        return await starting.WaitAsync(cancellationToken).ConfigureAwait(false);
    }

    private async Task<Runtime> StartCoreAsync()
    {
        var state = await SchemaMigrator.MigrateAsync(_dataSource, _options.Schema, _logger, CancellationToken.None).ConfigureAwait(false);
        var sql = new EventStoreSql(_options.Schema, state.PositionOffset);
        var coordinator = new AppendCoordinator(_dataSource, sql, _options, _time, _logger, OnCommitted);
        var runtime = new Runtime(sql, coordinator);
        Volatile.Write(ref _runtime, runtime);
        return runtime;
    }

    // Called after a commit that wrote or confirmed events, before the callers resume.
    private void OnCommitted(long position)
    {
        _changes.Publish(position);
    }

    private NotificationListener EnsureListening(Runtime runtime)
    {
        var listener = Volatile.Read(ref _listener);
        if (listener is null)
        {
            lock (_gate)
            {
                ObjectDisposedException.ThrowIf(_disposed, this);
                listener = _listener ??= new NotificationListener(_dataSource, runtime.Sql.Channel, _ => _changes.Pulse(), _options.ListenerReconnectDelay, WakeClock, _logger);
            }
        }

        listener.EnsureStarted();
        return listener;
    }

    private async ValueTask<NpgsqlConnection> OpenAsync(CancellationToken cancellationToken) =>
        await _dataSource.OpenConnectionAsync(cancellationToken).ConfigureAwait(false);

    private sealed record Runtime(EventStoreSql Sql, AppendCoordinator Coordinator);
}
