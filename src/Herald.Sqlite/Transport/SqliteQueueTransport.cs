using Herald.Sqlite.EventSourcing;
using Herald.Internal;
using Herald.Messages;
using Herald.Sqlite.Internal;
using Herald.Transport;
using Microsoft.Extensions.Logging;

namespace Herald.Sqlite.Transport;

/// <summary>
/// A durable queue in the SQLite file: messages are rows, claimed by a consumer with a lease, deleted on ack, moved to
/// <c>herald_queue_dead_letters</c> on dead-letter. Writes go through the file's grouped writer (the event store's, when
/// they share a file in this process), so the queue and the store never wait on each other's locks here.
/// </summary>
internal sealed class SqliteQueueTransport : LeasedQueueTransport<QueuedMessage>
{
    private readonly SqliteEventStore _store;
    private readonly bool _ownsStore;
    private QueueStatements? _statements;

    public SqliteQueueTransport(SqliteEventStore store, bool ownsStore, SqliteQueueOptions options, TimeProvider timeProvider, ILogger logger)
        : base(
            new LeasedQueueSettings
            {
                LeaseDuration = options.LeaseDuration,
                PollInterval = options.PollInterval,

                // Another process may hold the file's write lock past a renewal; a message that waited meanwhile may have lost its lease.
                StartsOnlyUnderASafeLease = true,

                // A settlement may wait behind the grouped writes and another process's lock: the claim is renewed meanwhile,
                // and a renewal never brings back a settled row (it extends only rows this consumer still leases).
                RenewsUntilSettled = true,
                TimeProvider = timeProvider,
                Logger = logger,
                Name = "SQLite queue",
            },
            options.MaxMessageBytes)
    {
        _store = store;
        _ownsStore = ownsStore;
        Options = options;
    }

    /// <inheritdoc />
    public override string Name => "sqlite";

    public SqliteQueueOptions Options { get; }

    public KeyedSignals Signals { get; } = new();

    /// <summary>True when the queue writes through an event store's writer it does not own (one writer for the file in this process).</summary>
    public bool SharesWriter => !_ownsStore;

    /// <summary>The file, as named in the connection string.</summary>
    public string DataSource => _store.DataSource;

    /// <summary>Opens the file (creating or migrating the schema).</summary>
    public ValueTask InitializeAsync(CancellationToken cancellationToken) => _store.InitializeAsync(cancellationToken);

    /// <inheritdoc />
    public override async ValueTask DeclareQueueAsync(string queue, CancellationToken cancellationToken = default)
    {
        // A queue is the set of its rows: nothing to create, but the file is opened so a bad path fails here.
        ValidateName(queue, nameof(queue));
        await _store.InitializeAsync(cancellationToken).ConfigureAwait(false);
    }

    /// <inheritdoc />
    public override async ValueTask BindAsync(string topic, string queue, CancellationToken cancellationToken = default)
    {
        ValidateName(topic, nameof(topic));
        ValidateName(queue, nameof(queue));
        var now = Now();
        await WriteAsync(q =>
        {
            q.Bind(topic, queue, now);
            return true;
        }, cancellationToken).ConfigureAwait(false);
    }

    /// <inheritdoc />
    public override async ValueTask SendAsync(string queue, Envelope envelope, SendOptions? options = null, CancellationToken cancellationToken = default)
    {
        ValidateName(queue, nameof(queue));
        ThrowIfTooLarge(envelope);
        var now = Now();
        var visibleAt = VisibleAt(now, options?.Delay);
        await WriteAsync(q =>
        {
            q.Insert(queue, envelope, visibleAt, now);
            return true;
        }, cancellationToken).ConfigureAwait(false);
        Signals.Pulse(queue);
    }

    /// <inheritdoc />
    public override async ValueTask PublishAsync(string topic, Envelope envelope, SendOptions? options = null, CancellationToken cancellationToken = default)
    {
        ValidateName(topic, nameof(topic));
        ThrowIfTooLarge(envelope);
        var now = Now();
        var visibleAt = VisibleAt(now, options?.Delay);
        var queues = await WriteAsync(q =>
        {
            // One savepoint of the writer's transaction: every bound queue gets its copy, or none does.
            var bound = q.BoundQueues(topic);
            foreach (var queue in bound)
            {
                q.Insert(queue, envelope, visibleAt, now);
            }

            return bound;
        }, cancellationToken).ConfigureAwait(false);
        foreach (var queue in queues)
        {
            Signals.Pulse(queue);
        }
    }

    /// <inheritdoc />
    protected override ValueTask ReadyAsync(CancellationToken cancellationToken) => _store.InitializeAsync(cancellationToken);

    /// <inheritdoc />
    protected override ITransportConsumer StartConsumer(string queue, ConsumerOptions options, DeliveryHandler handler)
    {
        var backend = new SqliteQueueBackend(this, queue);
        return Consumers.Start(backend, backend.Name, queue, options, handler);
    }

    /// <summary>
    /// Reads, without the write lock, whether the queue may have a claimable message now (a superset: a keyed message waiting
    /// for an older one of its key counts) and when the next delayed one becomes visible.
    /// </summary>
    internal ValueTask<(bool Claimable, DateTimeOffset? NextVisible)> ProbeAsync(string queue, long now, CancellationToken cancellationToken) =>
        ReadQueueRowAsync<(bool, DateTimeOffset?)>(
            "SELECT EXISTS (SELECT 1 FROM herald_queue_messages WHERE queue = $p0 AND visible_at <= $p1 AND (lease_until IS NULL OR lease_until <= $p1)), " +
            "(SELECT MIN(visible_at) FROM herald_queue_messages WHERE queue = $p0 AND visible_at > $p1)",
            queue,
            now,
            static row => (row.GetInt64(0) != 0, row.IsDBNull(1) ? null : new DateTimeOffset(row.GetInt64(1), TimeSpan.Zero)),
            cancellationToken);

    /// <summary>The queue's messages by state at <paramref name="now"/>, read without the write lock (the queue gauge).</summary>
    internal ValueTask<QueueDepth> CountAsync(string queue, long now, CancellationToken cancellationToken) =>
        ReadQueueRowAsync(
            "SELECT COALESCE(SUM(lease_until > $p1), 0), COALESCE(SUM(visible_at > $p1 AND NOT COALESCE(lease_until > $p1, 0)), 0), COUNT(*) " +
            "FROM herald_queue_messages WHERE queue = $p0",
            queue,
            now,
            static row =>
            {
                var (leased, delayed, all) = (row.GetInt64(0), row.GetInt64(1), row.GetInt64(2));
                return new QueueDepth(all - leased - delayed, leased, delayed);
            },
            cancellationToken);

    /// <inheritdoc />
    protected override async ValueTask<IReadOnlyList<QueueDeadLetter>> ReadDeadLettersAsync(string queue, long afterId, int max, CancellationToken cancellationToken) =>
        await _store.ReadAsync<IReadOnlyList<QueueDeadLetter>>(reader =>
        {
            // The envelope from column 2, as a candidate row has it, so a dead letter is read (or salvaged) as a claimed message is.
            var command = reader.Command(
                $"SELECT id, delivery_attempt, {EnvelopeColumns.Names}, reason, dead_lettered_at FROM herald_queue_dead_letters " +
                "WHERE queue = $p0 AND id > $p1 ORDER BY id LIMIT $p2",
                3);
            command.Parameters[0].Value = queue;
            command.Parameters[1].Value = afterId;
            command.Parameters[2].Value = max;
            using var rows = command.ExecuteReader();
            var columns = new DataReaderColumns(rows);
            var now = Now();
            var list = new List<QueueDeadLetter>();
            while (rows.Read())
            {
                var row = QueueStatements.Read(columns, rows.GetInt64(0), rows.GetInt32(1), now);
                const int After = 2 + EnvelopeColumns.Count;
                list.Add(new QueueDeadLetter(row, queue, rows.GetString(After), new DateTimeOffset(rows.GetInt64(After + 1), TimeSpan.Zero)));
            }

            return list;
        }, cancellationToken).ConfigureAwait(false);

    /// <inheritdoc />
    protected override async ValueTask DeleteDeadLetterAsync(long id, CancellationToken cancellationToken) =>
        await WriteAsync(q => q.DeleteDeadLetter(id), cancellationToken).ConfigureAwait(false);

    /// <inheritdoc />
    protected override async ValueTask DisposeCoreAsync()
    {
        if (_ownsStore)
        {
            await _store.DisposeAsync().ConfigureAwait(false);
        }
    }

    // One row about the queue at a time ($p0 the queue, $p1 the time), read without the write lock.
    private ValueTask<T> ReadQueueRowAsync<T>(string sql, string queue, long now, Func<Microsoft.Data.Sqlite.SqliteDataReader, T> read, CancellationToken cancellationToken) =>
        _store.ReadAsync(reader =>
        {
            var command = reader.Command(sql, 2);
            command.Parameters[0].Value = queue;
            command.Parameters[1].Value = now;
            using var row = command.ExecuteReader();
            row.Read();
            return read(row);
        }, cancellationToken);

    /// <summary>Runs queue statements in the writer's transaction (each call in its own savepoint).</summary>
    internal Task<T> WriteAsync<T>(Func<QueueStatements, T> write, CancellationToken cancellationToken) =>
        _store.WriteAsync(session => write(StatementsFor(session)), cancellationToken);

    /// <summary>Runs a write at once on the file, outside the writer's group, waiting at most about <paramref name="maxWait"/> for its lock.</summary>
    internal T WriteAtOnce<T>(Func<Microsoft.Data.Sqlite.SqliteConnection, T> write, TimeSpan maxWait) => _store.WriteAtOnce(write, maxWait);

    internal long Now() => TimeProvider.GetUtcNow().UtcTicks;

    internal static long VisibleAt(long now, TimeSpan? delay) =>
        delay is { } d && d > TimeSpan.Zero ? now + Math.Min(d.Ticks, DateTimeOffset.MaxValue.UtcTicks - now) : now;

    // Only the writer's thread calls this; its session lives as long as the store, so the statements are prepared once.
    private QueueStatements StatementsFor(WriteSession session) =>
        _statements is { } statements && ReferenceEquals(statements.Session, session) ? statements : _statements = new QueueStatements(session);
}
