using Herald.Sqlite.Schema;
using Herald.EventSourcing;
using Herald.Internal;
using Herald.Sqlite.Internal;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Logging;

namespace Herald.Sqlite.EventSourcing;

/// <summary>
/// The event store, checkpoint store and snapshot store in one SQLite file (WAL mode). One writer connection commits
/// concurrent writes together (each in its own savepoint, so a conflict fails only its caller); pooled reader connections
/// read without waiting for it. Positions are assigned inside the write transaction, so they are in commit order and the
/// global log has no gaps a reader could skip (docs/adr/0001-gap-free-global-log.md). Several stores, in one process or
/// several, may open the same file.
/// </summary>
internal sealed partial class SqliteEventStore : IEventStoreConnection, IDisposable
{
    private readonly SqliteStoreOptions _options;
    private readonly SqliteConnections _connections;
    private readonly TimeProvider _timeProvider;
    private readonly ILogger _logger;
    private readonly SemaphoreSlim _initLock = new(1, 1);

    // Held by the writer for each group transaction and by an open append for its whole life: one writer at a time.
    private readonly SemaphoreSlim _writeLock = new(1, 1);

    // Open appends queue here first, so at most one of them waits for the write lock at a time: when one ends, the writer
    // (already waiting) works off its queue before the next open append starts, and held transactions cannot starve it.
    private readonly SemaphoreSlim _openAppendGate = new(1, 1);
    private readonly PositionSignal _signal = new();
    private volatile Opened? _opened;
    private int _disposed;

    /// <summary>The clock the store and the stores sharing its file stamp their rows with.</summary>
    internal TimeProvider TimeProvider => _timeProvider;

    /// <summary>Creates the store; the file is opened (and created or migrated) on first use or by <see cref="InitializeAsync"/>.</summary>
    /// <param name="options">The file and its settings; validated here and copied.</param>
    /// <param name="timeProvider">The clock for recorded times and waits; the system clock when null.</param>
    /// <param name="logger">Where the store logs; nothing is logged when null.</param>
    public SqliteEventStore(SqliteStoreOptions options, TimeProvider? timeProvider = null, ILogger? logger = null)
    {
        OptionsProblems.Of(options, SqliteStoreOptions.Check).ThrowIfAny();
        _options = options.Clone();
        _connections = new SqliteConnections(_options);
        _timeProvider = timeProvider ?? TimeProvider.System;
        _logger = logger ?? NullLogger.Instance;
    }

    /// <summary>The file the store works on.</summary>
    public string DataSource => _connections.DataSource;

    /// <summary>Creates a store on a file path or connection string and opens it (creating or migrating the schema).</summary>
    public static Task<SqliteEventStore> OpenAsync(string pathOrConnectionString, Action<SqliteStoreOptions>? configure = null, CancellationToken cancellationToken = default)
    {
        var options = new SqliteStoreOptions { ConnectionString = pathOrConnectionString };
        configure?.Invoke(options);
        return Components.StartOrDisposeAsync(new SqliteEventStore(options), static (store, ct) => store.InitializeAsync(ct).AsTask(), cancellationToken);
    }

    /// <summary>
    /// Opens the file: switches it to WAL, applies schema migrations in one transaction and starts the writer. Idempotent;
    /// every operation does it on first use. Throws <see cref="SqliteSchemaVersionException"/> for a file of a newer Herald.
    /// </summary>
    public async ValueTask InitializeAsync(CancellationToken cancellationToken = default) => await OpenedAsync(cancellationToken).ConfigureAwait(false);

    /// <summary>Finishes the queued writes, then closes every connection. Waiters of <see cref="WaitForEventsAsync"/> fail.</summary>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) == 1)
        {
            return;
        }

        await _initLock.WaitAsync().ConfigureAwait(false);
        var opened = _opened;
        _opened = null;
        _initLock.Release();

        if (opened is not null)
        {
            await opened.Writer.DisposeAsync().ConfigureAwait(false);
            opened.Readers.Dispose();
            CloseWriteAtOnce();
            Log.Closed(_logger, DataSource);
        }

        _signal.Close(new ObjectDisposedException(nameof(SqliteEventStore), "The SQLite store was disposed."));
    }

    /// <summary>Like <see cref="DisposeAsync"/>, for callers that cannot await.</summary>
    public void Dispose() => DisposeAsync().AsTask().GetAwaiter().GetResult();

    /// <summary>Statistics of the writer: transactions run and writes in them (grouping shows as writes above transactions).</summary>
    internal (long Transactions, long Writes) WriterStatistics => _opened is { } opened ? (opened.Writer.Transactions, opened.Writer.Writes) : (0, 0);

    /// <summary>How often the writer took a group and asked for the write lock (a test waits on it to know a group waits).</summary>
    internal long WriterLockWaits => _opened is { } opened ? opened.Writer.LockWaits : 0;

    private ValueTask<Opened> OpenedAsync(CancellationToken cancellationToken) =>
        _opened is { } opened ? ValueTask.FromResult(opened) : new ValueTask<Opened>(OpenAsync(cancellationToken));

    private async Task<Opened> OpenAsync(CancellationToken cancellationToken)
    {
        await _initLock.WaitAsync(cancellationToken).ConfigureAwait(false);
        try
        {
            ObjectDisposedException.ThrowIf(Volatile.Read(ref _disposed) == 1, this);
            if (_opened is { } opened)
            {
                return opened;
            }

            var connection = _connections.OpenCreating();
            try
            {
                string journalMode;
                using (var command = connection.CreateCommand())
                {
                    command.CommandText = "PRAGMA journal_mode = WAL";
                    journalMode = (string)command.ExecuteScalar()!;
                }

                if (!string.Equals(journalMode, "wal", StringComparison.OrdinalIgnoreCase))
                {
                    throw new InvalidOperationException(
                        $"The SQLite file '{DataSource}' could not be switched to write-ahead logging (journal mode is '{journalMode}'). Herald needs WAL so readers never block the writer.");
                }

                SqliteSchema.Migrate(connection, DataSource, _timeProvider, m => Log.MigrationApplied(_logger, m.Version, m.Description, DataSource));
                using (var command = connection.CreateCommand())
                {
                    command.CommandText = "SELECT COALESCE(MAX(position), 0) FROM herald_events";
                    _signal.Observe((long)command.ExecuteScalar()!);
                }

                var writer = new WriteCoordinator(new WriteSession(connection, _timeProvider, _options.BusyTimeout), _writeLock, _options, DataSource, _timeProvider, _logger, _signal.Publish);
                opened = new Opened(writer, new ReaderPool(_connections, _options.ReaderPoolSize));
            }
            catch
            {
                connection.Dispose();
                throw;
            }

            Log.Opened(_logger, DataSource, SqliteSchema.CurrentVersion, "wal", _options.Synchronous);
            _opened = opened;
            return opened;
        }
        finally
        {
            _initLock.Release();
        }
    }

    /// <summary>Runs a query on a pooled reader connection (for the reliability stores on the same file).</summary>
    internal async ValueTask<T> ReadAsync<T>(Func<ReaderPool.Reader, T> query, CancellationToken cancellationToken)
    {
        var opened = await OpenedAsync(cancellationToken).ConfigureAwait(false);
        cancellationToken.ThrowIfCancellationRequested();
        var reader = opened.Readers.Rent();
        try
        {
            return query(reader);
        }
        finally
        {
            opened.Readers.Return(reader);
        }
    }

    /// <summary>Queues a write for the single writer and returns its outcome once its group committed.</summary>
    internal async Task<T> WriteAsync<T>(Func<WriteSession, T> write, CancellationToken cancellationToken)
    {
        var opened = await OpenedAsync(cancellationToken).ConfigureAwait(false);
        return await opened.Writer.WriteAsync(write, cancellationToken).ConfigureAwait(false);
    }

    private sealed record Opened(WriteCoordinator Writer, ReaderPool Readers);
}
