using Herald.Postgres.Schema;
using Microsoft.Extensions.Logging;

namespace Herald.Postgres.Transport;

/// <summary>Settings of the PostgreSQL durable queue: the schema, the size limit, leases and how consumers wait for work.</summary>
public sealed class PostgresQueueOptions
{
    /// <summary>The schema that holds the queue's tables (the event store's schema when both are used); created at start.</summary>
    public string Schema { get; set; } = PostgresStoreOptions.DefaultSchema;

    /// <summary>Largest message body accepted, in bytes (1 MiB by default); larger ones are refused before anything is written.</summary>
    public int MaxMessageBytes { get; set; } = 1024 * 1024;

    /// <summary>
    /// How long a claimed message stays reserved for its consumer (30 s by default). It is renewed every third of this while
    /// the consumer holds the message; a consumer that dies gives its messages back when their lease runs out.
    /// </summary>
    public TimeSpan LeaseDuration { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>
    /// Longest an idle consumer sleeps before it looks at the queue again (5 s by default). Sends and nacks wake consumers at
    /// once through NOTIFY and delayed messages wake them when due; this bounds how late an expired lease, or a notification
    /// that was lost (the LISTEN connection was down, or the sending process died between its commit and its NOTIFY), is noticed.
    /// </summary>
    public TimeSpan PollInterval { get; set; } = TimeSpan.FromSeconds(5);

    /// <summary>First delay before the LISTEN connection reconnects; it doubles up to 5 seconds while reconnects fail.</summary>
    public TimeSpan ListenerReconnectDelay { get; set; } = TimeSpan.FromMilliseconds(200);

    /// <summary>The clock for delays, visibility and leases; null for the system clock.</summary>
    public TimeProvider? TimeProvider { get; set; }

    /// <summary>Where the queue logs; null for no logging.</summary>
    public ILoggerFactory? LoggerFactory { get; set; }

    /// <summary>Throws an <see cref="ArgumentException"/> naming the first setting that is out of range.</summary>
    internal void Validate()
    {
        if (!PostgresIdentifier.IsValid(Schema, out var error))
        {
            throw new ArgumentException(error, nameof(Schema));
        }

        if (MaxMessageBytes < 0 || MaxMessageBytes > 512 * 1024 * 1024)
        {
            throw new ArgumentException($"{nameof(MaxMessageBytes)} is {MaxMessageBytes}; it must be between 0 and 512 MiB.", nameof(MaxMessageBytes));
        }

        if (LeaseDuration < TimeSpan.FromMilliseconds(100) || LeaseDuration > TimeSpan.FromDays(1))
        {
            throw new ArgumentException($"{nameof(LeaseDuration)} is {LeaseDuration}; it must be between 100 ms and one day.", nameof(LeaseDuration));
        }

        if (PollInterval < TimeSpan.FromMilliseconds(10) || PollInterval > TimeSpan.FromHours(1))
        {
            throw new ArgumentException($"{nameof(PollInterval)} is {PollInterval}; it must be between 10 ms and one hour.", nameof(PollInterval));
        }

        if (ListenerReconnectDelay <= TimeSpan.Zero)
        {
            throw new ArgumentException($"{nameof(ListenerReconnectDelay)} must be positive; it is {ListenerReconnectDelay}.", nameof(ListenerReconnectDelay));
        }
    }

    internal PostgresQueueOptions Clone() => (PostgresQueueOptions)MemberwiseClone();
}
