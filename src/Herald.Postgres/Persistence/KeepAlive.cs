using Npgsql;

namespace Herald.Postgres.Persistence;

/// <summary>Keeps an otherwise idle connection under watch, so its loss is noticed without waiting for the next command.</summary>
internal static class KeepAlive
{
    /// <summary>
    /// Waits on <paramref name="connection"/> until it fails (throws its error) or <paramref name="cancellationToken"/>
    /// fires; after every <paramref name="interval"/> without a message it makes a round trip, so a silent drop is noticed too.
    /// </summary>
    public static async Task RunAsync(NpgsqlConnection connection, TimeSpan interval, CancellationToken cancellationToken)
    {
        while (true)
        {
            if (!await connection.WaitAsync(interval, cancellationToken).ConfigureAwait(false))
            {
                await using var ping = new NpgsqlCommand("SELECT 1", connection);
                ping.CommandTimeout = (int)Math.Ceiling(interval.TotalSeconds);
                await ping.ExecuteScalarAsync(cancellationToken).ConfigureAwait(false);
            }
        }
    }
}
