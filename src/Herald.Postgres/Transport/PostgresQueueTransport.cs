using Herald.Internal;
using Herald.Messages;
using Herald.Postgres.Internal;
using Herald.Postgres.Notifications;
using Herald.Postgres.Schema;
using Herald.Transport;
using Microsoft.Extensions.Logging;
using Npgsql;

namespace Herald.Postgres.Transport;

/// <summary>
/// A durable queue in PostgreSQL: messages are rows of <c>queue_messages</c>, claimed by consumers with a lease
/// (<c>FOR UPDATE SKIP LOCKED</c>, so competing consumers in any number of processes never both take one), deleted on ack,
/// released with a later <c>visible_at</c> on nack and moved to <c>queue_dead_letters</c> on dead-letter. Concurrent sends
/// share commits (<see cref="SendCoordinator"/>). After each commit that can make a message claimable, this process's
/// consumers are woken directly and the others through a NOTIFY on the schema's queue channel, sent by the
/// <see cref="CommitNotifier"/> in a transaction of its own; each instance LISTENs there, and polls as a fallback.
/// </summary>
internal sealed class PostgresQueueTransport : LeasedQueueTransport<QueuedMessage>
{
    private readonly NpgsqlDataSource _dataSource;
    private readonly bool _ownsDataSource;
    private readonly NpgsqlDataSource _renewals;
    private readonly NotificationListener _listener;
    private readonly CommitNotifier _notifier;
    private readonly SendCoordinator _sends;
    private readonly Lock _gate = new();
    private Task? _starting;
    private Task? _openingRenewals;

    /// <param name="dataSource">The pool of the queue's statements.</param>
    /// <param name="ownsDataSource">Whether disposing the transport disposes <paramref name="dataSource"/>.</param>
    /// <param name="renewals">
    /// The consumers' lease renewals' own small pool (<see cref="PostgresQueueTransportFactory.CreateRenewals"/>); the
    /// transport owns it and disposes it after its consumers.
    /// </param>
    /// <param name="options">The validated options.</param>
    public PostgresQueueTransport(NpgsqlDataSource dataSource, bool ownsDataSource, NpgsqlDataSource renewals, PostgresQueueOptions options)
        : base(ConsumerSettings(options), options.MaxMessageBytes)
    {
        _dataSource = dataSource;
        _ownsDataSource = ownsDataSource;
        _renewals = renewals;
        Options = options;
        Sql = new QueueSql(options.Schema);
        _listener = new NotificationListener(dataSource, Sql.Channel, Wake, options.ListenerReconnectDelay, TimeProvider, Logger);
        _notifier = new CommitNotifier(dataSource, Sql.Channel, Logger);
        _sends = new SendCoordinator(dataSource, Sql, Logger, Committed);
    }

    /// <inheritdoc />
    public override string Name => "postgres";

    public PostgresQueueOptions Options { get; }

    public QueueSql Sql { get; }

    /// <summary>Wakes this process's consumers of a queue when a commit (here or, through NOTIFY, anywhere) may have made a message claimable.</summary>
    public KeyedSignals Wakeups { get; } = new();

    /// <summary>The connection pool the queue's statements run on.</summary>
    internal NpgsqlDataSource DataSource => _dataSource;

    /// <summary>
    /// The pool the consumers' lease renewals run on, apart from <see cref="DataSource"/>: a renewal never waits behind the
    /// queue's other statements for a connection.
    /// </summary>
    internal NpgsqlDataSource Renewals => _renewals;

    /// <summary>The LISTEN connection; tests terminate its backend.</summary>
    internal NotificationListener Listener => _listener;

    /// <summary>Creates or migrates the schema (once; later calls share the first) and starts listening for the queue's notifications.</summary>
    public Task StartAsync(CancellationToken cancellationToken)
    {
        Task starting;
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(IsDisposed, this);
            if (_starting is null || _starting.IsFaulted || _starting.IsCanceled)
            {
                // Not bound to the first caller's token: other callers share this start.
                _starting = StartCoreAsync();
            }

            starting = _starting;
        }

        return starting.WaitAsync(cancellationToken);
    }

    /// <inheritdoc />
    public override async ValueTask DeclareQueueAsync(string queue, CancellationToken cancellationToken = default)
    {
        // A queue is the set of its rows: nothing to create, but the schema is made ready so a bad connection fails here.
        ValidateName(queue, nameof(queue));
        await StartAsync(cancellationToken).ConfigureAwait(false);

        // The health check's probe: the start is remembered, so this asks the server each time, as sends' statements would.
        await RestoringAsync(
            this,
            static async (transport, ct) =>
            {
                await using var command = transport._dataSource.CreateCommand(transport.Sql.Probe);
                return await command.ExecuteNonQueryAsync(ct).ConfigureAwait(false);
            },
            cancellationToken).ConfigureAwait(false);
    }

    /// <inheritdoc />
    public override async ValueTask BindAsync(string topic, string queue, CancellationToken cancellationToken = default)
    {
        ValidateName(topic, nameof(topic));
        ValidateName(queue, nameof(queue));
        await StartAsync(cancellationToken).ConfigureAwait(false);
        await RestoringAsync(
            (Transport: this, Topic: topic, Queue: queue),
            static async (s, ct) =>
            {
                await using var command = s.Transport._dataSource.CreateCommand(s.Transport.Sql.Bind);
                command.Parameters.Add(Text(s.Topic));
                command.Parameters.Add(Text(s.Queue));
                command.Parameters.Add(Time(s.Transport.Now()));
                return await command.ExecuteNonQueryAsync(ct).ConfigureAwait(false);
            },
            cancellationToken).ConfigureAwait(false);
    }

    /// <inheritdoc />
    public override async ValueTask SendAsync(string queue, Envelope envelope, SendOptions? options = null, CancellationToken cancellationToken = default)
    {
        var correlationId = Checked(queue, nameof(queue), envelope);
        await StartAsync(cancellationToken).ConfigureAwait(false);

        // Inline, not through RestoringAsync: a delegate's state machine would cost every send an allocation.
        for (var restored = false; ; restored = true)
        {
            try
            {
                var now = Now();
                await _sends.SendAsync(new PendingSend(queue, envelope, correlationId, now, Add(now, options?.Delay), cancellationToken), cancellationToken).ConfigureAwait(false);
                return;
            }
            catch (PostgresException e) when (!restored && TablesMissing(e))
            {
                await RestoreAsync(e, cancellationToken).ConfigureAwait(false);
            }
        }
    }

    /// <inheritdoc />
    public override async ValueTask PublishAsync(string topic, Envelope envelope, SendOptions? options = null, CancellationToken cancellationToken = default)
    {
        var correlationId = Checked(topic, nameof(topic), envelope);
        await StartAsync(cancellationToken).ConfigureAwait(false);

        // Inline, not through RestoringAsync: a delegate's state machine would cost every publish an allocation.
        var queues = new List<string>();
        for (var restored = false; ; restored = true)
        {
            try
            {
                await using var command = _dataSource.CreateCommand(Sql.Publish);
                AddMessageParameters(command.Parameters, topic, envelope, correlationId, options?.Delay);
                await using var reader = await command.ExecuteReaderAsync(cancellationToken).ConfigureAwait(false);
                while (await reader.ReadAsync(cancellationToken).ConfigureAwait(false))
                {
                    queues.Add(reader.GetString(0));
                }

                break;
            }
            catch (PostgresException e) when (!restored && TablesMissing(e))
            {
                await RestoreAsync(e, cancellationToken).ConfigureAwait(false);
            }
        }

        Committed(queues);
    }

    /// <summary>
    /// Runs a queue statement; when it finds the queue's tables or their schema dropped behind Herald's back, makes them
    /// again (<see cref="RestoreAsync"/>) and runs it once more. Nothing is asked of the server beforehand. For the probe,
    /// binds and claims; sends and publishes run the same loop inline, sparing each message the delegate's state machine.
    /// </summary>
    internal async ValueTask<TResult> RestoringAsync<TState, TResult>(TState state, Func<TState, CancellationToken, ValueTask<TResult>> statement, CancellationToken cancellationToken)
    {
        for (var restored = false; ; restored = true)
        {
            try
            {
                return await statement(state, cancellationToken).ConfigureAwait(false);
            }
            catch (PostgresException e) when (!restored && TablesMissing(e))
            {
                await RestoreAsync(e, cancellationToken).ConfigureAwait(false);
            }
        }
    }

    /// <summary>Whether a statement failed because the queue's tables, or their schema, are gone.</summary>
    private static bool TablesMissing(PostgresException e) =>
        e.SqlState is PostgresErrorCodes.UndefinedTable or PostgresErrorCodes.InvalidSchemaName;

    /// <summary>Makes the dropped tables again: one restore, shared by the callers that find them missing meanwhile.</summary>
    private async Task RestoreAsync(PostgresException missing, CancellationToken cancellationToken)
    {
        Log.QueueTablesMissing(Logger, missing, Options.Schema);
        Task restoring;
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(IsDisposed, this);

            // Replaces the finished start, so StartAsync waits for it too; callers that find the tables missing while it
            // runs share it.
            if (_starting is null || _starting.IsCompleted)
            {
                _starting = RestoreCoreAsync();
            }

            restoring = _starting;
        }

        await restoring.WaitAsync(cancellationToken).ConfigureAwait(false);
    }

    /// <inheritdoc />
    protected override ITransportConsumer StartConsumer(string queue, ConsumerOptions options, DeliveryHandler handler)
    {
        lock (_gate)
        {
            // Once, with the first consumer: the renewal pool keeps the connection from then on, and a first renewal no longer
            // connects while the lease runs (tens to hundreds of milliseconds on a loaded machine, against a lease of one
            // second in the tests). Not awaited: a renewal that finds it not open yet connects by itself.
            _openingRenewals ??= OpenRenewalsAsync();
        }

        var backend = new PostgresQueueBackend(this, queue);
        return Consumers.Start(backend, backend.Name, queue, options, handler);
    }

    private async Task OpenRenewalsAsync()
    {
        try
        {
            await using var connection = await _renewals.OpenConnectionAsync().ConfigureAwait(false);
        }
#pragma warning disable CA1031 // Only a head start: the first renewal connects by itself, and reports what fails then.
        catch (Exception ex)
#pragma warning restore CA1031
        {
            Log.RenewalConnectionNotOpened(Logger, ex, Options.Schema);
        }
    }

    /// <inheritdoc />
    protected override async ValueTask<IReadOnlyList<QueueDeadLetter>> ReadDeadLettersAsync(string queue, long afterId, int max, CancellationToken cancellationToken)
    {
        await using var connection = await _dataSource.OpenConnectionAsync(cancellationToken).ConfigureAwait(false);
        await using var batch = PlannerGuard.Batch(
            connection, Sql.ReadDeadLetters, [Text(queue), new NpgsqlParameter<long> { TypedValue = afterId }, new NpgsqlParameter<int> { TypedValue = max }]);
        await using var reader = await PlannerGuard.ExecuteReaderAsync(batch, cancellationToken).ConfigureAwait(false);
        var list = new List<QueueDeadLetter>();
        var now = TimeProvider.GetUtcNow();
        while (await reader.ReadAsync(cancellationToken).ConfigureAwait(false))
        {
            var id = reader.GetInt64(0);
            var row = PostgresQueueBackend.Read(reader, id, reader.GetInt32(3 + EnvelopeColumns.Count), now);
            list.Add(new QueueDeadLetter(row, queue, reader.GetString(1), reader.GetFieldValue<DateTimeOffset>(2)));
        }

        return list;
    }

    /// <inheritdoc />
    protected override async ValueTask DeleteDeadLetterAsync(long id, CancellationToken cancellationToken)
    {
        await using var connection = await _dataSource.OpenConnectionAsync(cancellationToken).ConfigureAwait(false);
        await using var command = new NpgsqlCommand(Sql.DeleteDeadLetter, connection);
        command.Parameters.Add(new NpgsqlParameter<long> { TypedValue = id });
        await command.ExecuteNonQueryAsync(cancellationToken).ConfigureAwait(false);
    }

    /// <inheritdoc />
    protected override async ValueTask DisposeCoreAsync()
    {
        // Sends already queued commit, then their NOTIFY goes out.
        await _sends.DisposeAsync().ConfigureAwait(false);
        await _notifier.DisposeAsync().ConfigureAwait(false);
        await _listener.DisposeAsync().ConfigureAwait(false);

        // The consumers, and their renewal threads, are stopped by now.
        Task? opening;
        lock (_gate)
        {
            opening = _openingRenewals;
        }

        if (opening is not null)
        {
            await opening.ConfigureAwait(false);
        }

        await _renewals.DisposeAsync().ConfigureAwait(false);
        if (_ownsDataSource)
        {
            await _dataSource.DisposeAsync().ConfigureAwait(false);
        }
    }

    /// <summary>After a commit that made messages of these queues claimable: wakes this process's consumers at once, the others by NOTIFY.</summary>
    private void Committed(IReadOnlyCollection<string> queues)
    {
        foreach (var queue in queues)
        {
            Wakeups.Pulse(queue);
        }

        _notifier.Request(queues);
    }

    /// <summary>After a settlement that may have made a message of the queue claimable: wakes this process's consumers, the others by NOTIFY.</summary>
    internal void Changed(string queue)
    {
        Wakeups.Pulse(queue);
        _notifier.Request(queue);
    }

    // A notification names its queue; null (after a reconnect) means any queue may have changed.
    private void Wake(string? queue)
    {
        if (queue is null)
        {
            Wakeups.PulseAll();
        }
        else
        {
            Wakeups.Pulse(queue);
        }
    }

    /// <inheritdoc />
    protected override ValueTask ReadyAsync(CancellationToken cancellationToken) => new(StartAsync(cancellationToken));

    internal DateTimeOffset Now() => TimeProvider.GetUtcNow();

    internal static DateTimeOffset Add(DateTimeOffset time, TimeSpan? delay) =>
        delay is { } d && d > TimeSpan.Zero ? (d >= DateTimeOffset.MaxValue - time ? DateTimeOffset.MaxValue : time + d) : time;

    private async Task StartCoreAsync()
    {
        await SchemaMigrator.MigrateAsync(_dataSource, Options.Schema, Logger, CancellationToken.None).ConfigureAwait(false);
        _listener.EnsureStarted();
    }

    private async Task RestoreCoreAsync()
    {
        await SchemaMigrator.RecreateAsync(_dataSource, Options.Schema, QueueSql.Migration, Logger, CancellationToken.None).ConfigureAwait(false);
        _listener.EnsureStarted();
    }

    private void AddMessageParameters(NpgsqlParameterCollection parameters, string queueOrTopic, Envelope envelope, string? correlationId, TimeSpan? delay)
    {
        var now = Now();
        parameters.Add(Text(queueOrTopic));
        EnvelopeColumns.Add(parameters, envelope, correlationId);
        parameters.Add(Time(now));
        parameters.Add(Time(Add(now, delay)));
    }

    // What a send or a publish checks before anything is queued; returns the correlation id, read once for the check and the
    // row. PostgreSQL's text cannot hold U+0000: the row's insert failed with a bare 22021 (PostgresException) naming neither
    // the message nor the field. Refused before it is queued, as the event store and the outbox refuse it; never stored altered.
    private string? Checked(string name, string parameter, Envelope envelope)
    {
        ValidateName(name, parameter);
        ThrowIfTooLarge(envelope);
        var correlationId = envelope.CorrelationId;
        NulText.ThrowIfHeld(name, parameter == "queue" ? "queue name" : "topic name", parameter);
        NulText.ThrowIfHeld(envelope, correlationId, nameof(envelope), (Name: name, envelope.MessageId), static s => $"message {s.MessageId} sent to '{s.Name}'");
        return correlationId;
    }

    internal static NpgsqlParameter<string> Text(string value) => new() { TypedValue = value };

    internal static NpgsqlParameter<DateTimeOffset> Time(DateTimeOffset value) => new() { TypedValue = value };

    private static LeasedQueueSettings ConsumerSettings(PostgresQueueOptions options) => new()
    {
        LeaseDuration = options.LeaseDuration,
        PollInterval = options.PollInterval,

        // A claim is a round trip: a busy consumer claims once half its room is free, not once per settled message.
        ClaimsInBatches = true,

        // A settlement opens its connection from the queue's pool, which may be full for up to its Timeout: the claim is
        // renewed meanwhile (on the renewals' pool), and a renewal never brings back a settled row (QueueSql.Renew).
        RenewsUntilSettled = true,
        TimeProvider = options.TimeProvider ?? TimeProvider.System,
        Logger = (options.LoggerFactory ?? Microsoft.Extensions.Logging.Abstractions.NullLoggerFactory.Instance).CreateLogger("Herald.Postgres.Queue"),
        Name = "PostgreSQL queue",
    };
}
