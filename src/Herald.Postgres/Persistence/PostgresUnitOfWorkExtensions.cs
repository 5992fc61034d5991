using Herald.Postgres.Persistence;
using Herald.Persistence;
using Herald.Postgres.Reliability;
using Npgsql;

namespace Herald.Postgres;

/// <summary>The application's own tables in Herald's PostgreSQL unit of work.</summary>
public static class PostgresUnitOfWorkExtensions
{
    /// <summary>
    /// The unit of work's <see cref="NpgsqlTransaction"/> (begun now if no write has begun it). Run the application's own
    /// statements on <c>transaction.Connection</c> with this transaction: they commit together with the events, outbox rows
    /// and inbox mark of the unit of work, or not at all. Run them one at a time; do not commit, roll back or keep the
    /// transaction, which the unit of work owns.
    /// </summary>
    public static ValueTask<NpgsqlTransaction> GetNpgsqlTransactionAsync(this IUnitOfWork unitOfWork, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(unitOfWork);
        var own = unitOfWork as PostgresUnitOfWork
            ?? throw new ArgumentException($"Only Herald's PostgreSQL unit of work (UsePostgres) has an Npgsql transaction, not a {unitOfWork.GetType().Name}.", nameof(unitOfWork));
        return own.GetTransactionAsync(cancellationToken);
    }
}
