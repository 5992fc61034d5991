using Herald.EventSourcing;
using Herald.Postgres.Schema;
using Microsoft.Extensions.Logging;

namespace Herald.Postgres;

/// <summary>Settings of Herald's PostgreSQL stores: where their tables live and how the event store groups appends.</summary>
public sealed class PostgresStoreOptions
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

    /// <summary>How many appends may wait for the coordinator before callers are held back (back-pressure).</summary>
    public int AppendQueueCapacity { get; set; } = 4096;

    /// <summary>How many events one query of a read fetches.</summary>
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

    /// <summary>First delay before the notification connection reconnects; it doubles up to 5 seconds while reconnects fail.</summary>
    public TimeSpan ListenerReconnectDelay { get; set; } = TimeSpan.FromMilliseconds(200);

    /// <summary>The clock that stamps recorded events, snapshots and checkpoints; null for the system clock.</summary>
    public TimeProvider? TimeProvider { get; set; }

    /// <summary>Where the stores log; null for no logging.</summary>
    public ILoggerFactory? LoggerFactory { get; set; }

    /// <summary>Throws an <see cref="ArgumentException"/> naming the first setting that is out of range.</summary>
    internal void Validate()
    {
        if (!PostgresIdentifier.IsValid(Schema, out var error))
        {
            throw new ArgumentException(error, nameof(Schema));
        }

        Positive(MaxEventBytes, nameof(MaxEventBytes));
        Positive(MaxAppendsPerCommit, nameof(MaxAppendsPerCommit));
        Positive(MaxEventsPerCommit, nameof(MaxEventsPerCommit));
        Positive(AppendWriters, nameof(AppendWriters));
        Positive(AppendQueueCapacity, nameof(AppendQueueCapacity));
        Positive(ReadPageSize, nameof(ReadPageSize));
        if (MaxEventBytes > 512 * 1024 * 1024)
        {
            throw new ArgumentException($"{nameof(MaxEventBytes)} is {MaxEventBytes}; PostgreSQL stores at most 1 GB per value and Herald accepts at most 512 MiB.", nameof(MaxEventBytes));
        }

        if (HorizonRecheckInterval <= TimeSpan.Zero)
        {
            throw new ArgumentException($"{nameof(HorizonRecheckInterval)} must be positive; it is {HorizonRecheckInterval}.", nameof(HorizonRecheckInterval));
        }

        if (NotificationFallbackInterval <= TimeSpan.Zero)
        {
            throw new ArgumentException($"{nameof(NotificationFallbackInterval)} must be positive; it is {NotificationFallbackInterval}.", nameof(NotificationFallbackInterval));
        }

        if (ReadOwnAppendsTimeout < TimeSpan.Zero)
        {
            throw new ArgumentException($"{nameof(ReadOwnAppendsTimeout)} must not be negative; it is {ReadOwnAppendsTimeout}.", nameof(ReadOwnAppendsTimeout));
        }

        if (ListenerReconnectDelay <= TimeSpan.Zero)
        {
            throw new ArgumentException($"{nameof(ListenerReconnectDelay)} must be positive; it is {ListenerReconnectDelay}.", nameof(ListenerReconnectDelay));
        }
    }

    internal PostgresStoreOptions Clone() => (PostgresStoreOptions)MemberwiseClone();

    private static void Positive(int value, string name)
    {
        if (value < 1)
        {
            throw new ArgumentException($"{name} must be at least 1; it is {value}.", name);
        }
    }
}
