using Herald.Persistence;

namespace Orders.Fulfilment;

/// <summary>
/// The tables of the sample's in-process inventory, payment and shipping services, in the same database as Herald's
/// stores: every write joins the saga step's unit of work, so "stock reserved" and "this step is done" commit together.
/// Each effect is keyed by the order (its idempotency key), so a step that runs again after a crash or a conflict
/// counts a repeat instead of reserving or charging twice.
/// </summary>
public abstract class Ledger
{
    /// <summary>Which instance of the service this is; each effect records the instance that made it.</summary>
    public string Instance { get; init; } = $"{Environment.MachineName}-{Environment.ProcessId}-{Guid.NewGuid().ToString("N")[..6]}";

    /// <summary>Creates the tables when missing.</summary>
    public abstract Task EnsureSchemaAsync(CancellationToken cancellationToken);

    /// <summary>Runs one statement in <paramref name="unitOfWork"/> (with <c>{prefix}</c> standing for the table prefix).</summary>
    public abstract ValueTask ExecuteAsync(IUnitOfWork unitOfWork, string sql, IReadOnlyDictionary<string, object?> parameters, CancellationToken cancellationToken);

    /// <summary>Counts what the services did, for one order or (null) for all.</summary>
    public abstract Task<LedgerCounts> CountAsync(Guid? orderId, CancellationToken cancellationToken);

    /// <summary>How many payments each instance charged (which instances shared the work).</summary>
    public abstract Task<IReadOnlyDictionary<string, long>> PaymentsByInstanceAsync(CancellationToken cancellationToken);

    /// <summary>The query of <see cref="PaymentsByInstanceAsync"/>.</summary>
    protected const string ByInstanceSql = "SELECT instance, count(*) FROM {prefix}payments GROUP BY instance";

    /// <summary>The tables, in the engine's dialect (<c>{prefix}</c> and <c>{text}</c>/<c>{int}</c> placeholders).</summary>
    protected const string Schema = """
        CREATE TABLE IF NOT EXISTS {prefix}inventory_reservations (
            order_id TEXT PRIMARY KEY, units {int} NOT NULL, status TEXT NOT NULL, correlation_id TEXT, instance TEXT NOT NULL, repeats {int} NOT NULL DEFAULT 0);
        CREATE TABLE IF NOT EXISTS {prefix}payments (
            order_id TEXT PRIMARY KEY, payment_id TEXT NOT NULL, amount_cents {int} NOT NULL, status TEXT NOT NULL, correlation_id TEXT, instance TEXT NOT NULL, repeats {int} NOT NULL DEFAULT 0);
        CREATE TABLE IF NOT EXISTS {prefix}shipments (
            order_id TEXT PRIMARY KEY, tracking_number TEXT NOT NULL, status TEXT NOT NULL, correlation_id TEXT, instance TEXT NOT NULL, repeats {int} NOT NULL DEFAULT 0);
        """;

    /// <summary>The counting query (one row).</summary>
    protected const string CountSql = """
        SELECT
          (SELECT count(*) FROM {prefix}inventory_reservations WHERE {filter}),
          (SELECT count(*) FROM {prefix}inventory_reservations WHERE status = 'released' AND {filter}),
          (SELECT coalesce(sum(repeats), 0) FROM {prefix}inventory_reservations WHERE {filter}),
          (SELECT count(*) FROM {prefix}payments WHERE {filter}),
          (SELECT count(*) FROM {prefix}payments WHERE status = 'refunded' AND {filter}),
          (SELECT coalesce(sum(repeats), 0) FROM {prefix}payments WHERE {filter}),
          (SELECT count(*) FROM {prefix}shipments WHERE {filter})
        """;

    /// <summary>Reads the rows of <see cref="ByInstanceSql"/>.</summary>
    protected static async Task<IReadOnlyDictionary<string, long>> ReadByInstanceAsync(System.Data.Common.DbCommand command, CancellationToken cancellationToken)
    {
        var counts = new Dictionary<string, long>(StringComparer.Ordinal);
        await using var reader = await command.ExecuteReaderAsync(cancellationToken);
        while (await reader.ReadAsync(cancellationToken))
        {
            counts[reader.GetString(0)] = reader.GetInt64(1);
        }

        return counts;
    }

    /// <summary>Turns the row of <see cref="CountSql"/> into counts.</summary>
    protected static LedgerCounts ReadCounts(System.Data.Common.DbDataReader reader) => new(
        reader.GetInt64(0), reader.GetInt64(1), reader.GetInt64(2), reader.GetInt64(3), reader.GetInt64(4), reader.GetInt64(5), reader.GetInt64(6));
}

/// <summary>What the in-process services did: rows are effects, repeats are runs that found the effect already there.</summary>
public sealed record LedgerCounts(long Reservations, long Released, long ReservationRepeats, long Payments, long Refunded, long PaymentRepeats, long Shipments);
