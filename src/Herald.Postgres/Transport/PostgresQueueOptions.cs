using Herald.Internal;
using Herald.Postgres.Internal;
using Herald.Postgres.Schema;
using Microsoft.Extensions.Logging;

namespace Herald.Postgres.Transport;

/// <summary>Settings of the PostgreSQL durable queue: the schema, the size limit, leases and how consumers wait for work.</summary>
public sealed class PostgresQueueOptions : IPostgresOptions<PostgresQueueOptions>
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

    /// <summary>
    /// Longest a lease renewal waits for its connection and for its statement, in whole seconds as Npgsql counts them: a
    /// sixth of the lease, so a renewal (every third of the lease) that gives up is tried again well before the lease runs out.
    /// </summary>
    internal int RenewalTimeoutSeconds => Math.Max(1, (int)(LeaseDuration / 6).TotalSeconds);

    /// <summary>Throws an <see cref="ArgumentException"/> naming the first setting that is out of range.</summary>
    internal void Validate() => OptionsProblems.Of(this, Check).ThrowFirstAsArgumentException();

    /// <summary>Adds every setting that is out of range to <paramref name="problems"/>.</summary>
    internal static void Check(PostgresQueueOptions options, OptionsProblems problems)
    {
        PostgresIdentifier.CheckSchema(options.Schema, problems);
        problems.Between(nameof(MaxMessageBytes), options.MaxMessageBytes, 0, 512 * 1024 * 1024, "0 and 512 MiB");
        problems.Between(nameof(LeaseDuration), options.LeaseDuration, TimeSpan.FromMilliseconds(100), TimeSpan.FromDays(1), "100 ms and one day");
        problems.Between(nameof(PollInterval), options.PollInterval, TimeSpan.FromMilliseconds(10), TimeSpan.FromHours(1), "10 ms and one hour");
        problems.Positive(nameof(ListenerReconnectDelay), options.ListenerReconnectDelay);
    }

    /// <inheritdoc cref="IPostgresOptions{TSelf}.Clone"/>
    internal PostgresQueueOptions Clone() => (PostgresQueueOptions)MemberwiseClone();

    PostgresQueueOptions IPostgresOptions<PostgresQueueOptions>.Clone() => Clone();
}
