using Herald.EventSourcing;
using Herald.Internal;
using Herald.Postgres.Internal;
using Herald.Postgres.Schema;
using Microsoft.Extensions.Logging;

namespace Herald.Postgres;

/// <summary>Settings of Herald's PostgreSQL stores: where their tables live and how the event store groups appends.</summary>
public sealed class PostgresStoreOptions : IPostgresOptions<PostgresStoreOptions>
{
    /// <summary>The default schema name.</summary>
    public const string DefaultSchema = "herald";

    /// <summary>The schema that holds Herald's tables (lower-case letters, digits and '_', at most 48 characters); created at start.</summary>
    public string Schema { get; set; } = DefaultSchema;

    /// <summary>Largest event body accepted, in bytes.</summary>
    public int MaxEventBytes { get; set; } = AppendValidation.DefaultMaxEventBytes;

    /// <summary>
    /// How many concurrent appends the append coordinator may commit in one transaction. Each keeps its own
    /// expected-version and idempotency checks; one commit serves them all.
    /// </summary>
    public int MaxAppendsPerCommit { get; set; } = 64;

    /// <summary>How many events one grouped commit may hold before the coordinator starts the next one.</summary>
    public int MaxEventsPerCommit { get; set; } = 20_000;

    /// <summary>How many transactions the append coordinator runs at once (each on its own connection).</summary>
    public int AppendWriters { get; set; } = 2;

    /// <summary>
    /// How long the append coordinator's loop, woken to fewer waiting appends than its previous group held,
    /// waits for the rest before committing a smaller group (at most 1 ms; zero never waits). Writers whose appends just
    /// committed usually append again within microseconds; waiting for them keeps one full group instead of a small group
    /// and a second commit (about 10 % more events/s with 16 writers, see docs/postgres.md). The loop polls while it
    /// waits, yielding the processor. A lone writer never waits: its previous group held one append.
    /// </summary>
    public TimeSpan AppendLinger { get; set; } = TimeSpan.FromMicroseconds(200);

    /// <summary>How many appends may wait for the coordinator before callers are held back (back-pressure).</summary>
    public int AppendQueueCapacity { get; set; } = 4096;

    /// <summary>
    /// The shortest time between two NOTIFYs of grouped appends (2 ms): groups committed in between share the next one.
    /// Internal: tests widen it to see a group's NOTIFY deferred.
    /// </summary>
    internal TimeSpan AppendNotifyInterval { get; set; } = TimeSpan.FromMilliseconds(2);

    /// <summary>
    /// How many events one query of a read fetches at most; a page also ends once its bodies reach 4 MiB, and the page after
    /// such a one asks for as many events as it held (docs/postgres.md, Positions).
    /// </summary>
    public int ReadPageSize { get; set; } = 8000;

    /// <summary>
    /// While committed events wait behind an older open transaction, or while the notification connection is down, waiting
    /// readers re-check the visibility horizon this often. It affects only how soon they see those events.
    /// </summary>
    public TimeSpan HorizonRecheckInterval { get; set; } = TimeSpan.FromMilliseconds(100);

    /// <summary>
    /// While nothing seems to happen, waiting readers still re-check this often, in case a notification was lost (a node that
    /// stopped between its commit and its notification, or a notification connection that died silently).
    /// </summary>
    public TimeSpan NotificationFallbackInterval { get; set; } = TimeSpan.FromSeconds(5);

    /// <summary>
    /// How long <see cref="IEventStore.GetLastPositionAsync"/> and <see cref="IEventStore.ReadAllAsync"/> wait for this
    /// store's own committed appends to become readable in <c>$all</c> (an older transaction elsewhere in the database can
    /// hold them back). Zero turns the wait off; past it, reads return what is readable.
    /// </summary>
    public TimeSpan ReadOwnAppendsTimeout { get; set; } = TimeSpan.FromSeconds(10);

    /// <summary>
    /// First delay before the notification connection reconnects; it doubles up to 5 seconds while reconnects fail (a longer
    /// one, <see cref="TimeSpan.MaxValue"/> included, is taken as 5 seconds).
    /// </summary>
    public TimeSpan ListenerReconnectDelay { get; set; } = TimeSpan.FromMilliseconds(200);

    /// <summary>The clock that stamps recorded events, snapshots and checkpoints; null for the system clock.</summary>
    public TimeProvider? TimeProvider { get; set; }

    /// <summary>Where the stores log; null for no logging.</summary>
    public ILoggerFactory? LoggerFactory { get; set; }

    /// <summary>Throws an <see cref="ArgumentException"/> naming the first setting that is out of range.</summary>
    internal void Validate() => OptionsProblems.Of(this, Check).ThrowFirstAsArgumentException();

    /// <summary>Adds every setting that is out of range to <paramref name="problems"/>.</summary>
    internal static void Check(PostgresStoreOptions options, OptionsProblems problems)
    {
        PostgresIdentifier.CheckSchema(options.Schema, problems);

        // PostgreSQL stores at most 1 GB per value; Herald accepts at most 512 MiB.
        problems.Between(nameof(MaxEventBytes), options.MaxEventBytes, 1, 512 * 1024 * 1024, "1 and 512 MiB");
        problems.AtLeast(nameof(MaxAppendsPerCommit), options.MaxAppendsPerCommit, 1);
        problems.AtLeast(nameof(MaxEventsPerCommit), options.MaxEventsPerCommit, 1);
        problems.AtLeast(nameof(AppendWriters), options.AppendWriters, 1);
        problems.Between(nameof(AppendLinger), options.AppendLinger, TimeSpan.Zero, TimeSpan.FromMilliseconds(1), "0 and 1 ms");
        problems.AtLeast(nameof(AppendQueueCapacity), options.AppendQueueCapacity, 1);
        problems.AtLeast(nameof(ReadPageSize), options.ReadPageSize, 1);
        problems.Positive(nameof(HorizonRecheckInterval), options.HorizonRecheckInterval);
        problems.Positive(nameof(NotificationFallbackInterval), options.NotificationFallbackInterval);
        problems.NotNegative(nameof(ReadOwnAppendsTimeout), options.ReadOwnAppendsTimeout);

        // Waited on by waiting readers, and added to the time of day for a read's deadline: longer ones threw there.
        problems.AtMostLongestWait(nameof(HorizonRecheckInterval), options.HorizonRecheckInterval);
        problems.AtMostLongestWait(nameof(NotificationFallbackInterval), options.NotificationFallbackInterval);
        problems.AtMostLongestSpan(nameof(ReadOwnAppendsTimeout), options.ReadOwnAppendsTimeout);
        problems.Positive(nameof(ListenerReconnectDelay), options.ListenerReconnectDelay);
    }

    /// <inheritdoc cref="IPostgresOptions{TSelf}.Clone"/>
    internal PostgresStoreOptions Clone() => (PostgresStoreOptions)MemberwiseClone();

    PostgresStoreOptions IPostgresOptions<PostgresStoreOptions>.Clone() => Clone();
}
