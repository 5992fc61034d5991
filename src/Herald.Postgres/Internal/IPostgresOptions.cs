using Microsoft.Extensions.Logging;

namespace Herald.Postgres.Internal;

/// <summary>What every PostgreSQL options type has (the store's and the queue's): the host's clock and loggers, unless set.</summary>
internal interface IPostgresOptions<TSelf>
    where TSelf : class, IPostgresOptions<TSelf>
{
    /// <summary>The clock; null for the host's (or the system's).</summary>
    TimeProvider? TimeProvider { get; set; }

    /// <summary>Where to log; null for the host's loggers (or none).</summary>
    ILoggerFactory? LoggerFactory { get; set; }

    /// <summary>A copy, so later changes by the caller do not reach a running component.</summary>
    TSelf Clone();
}
