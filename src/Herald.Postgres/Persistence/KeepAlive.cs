using Npgsql;

namespace Herald.Postgres.Persistence;

/// <summary>Keeps an otherwise idle connection under watch, so its loss is noticed without waiting for the next command.</summary>
internal static class KeepAlive
{
    /// <summary>
    /// Waits on <paramref name="connection"/> until it fails (throws its error) or <paramref name="cancellationToken"/>
    /// fires; after every <paramref name="interval"/> without a message it makes a round trip, so a silent drop is noticed
    /// too. A round trip unanswered after twice <paramref name="interval"/> calls <paramref name="late"/> at once.
    /// </summary>
    public static async Task RunAsync(NpgsqlConnection connection, TimeSpan interval, Action late, CancellationToken cancellationToken)
    {
        while (true)
        {
            if (!await connection.WaitAsync(interval, cancellationToken).ConfigureAwait(false))
            {
                await using var ping = new NpgsqlCommand("SELECT 1", connection);
                ping.CommandTimeout = (int)Math.Ceiling(interval.TotalSeconds);
                var answered = ping.ExecuteScalarAsync(cancellationToken);
                try
                {
                    await answered.WaitAsync(interval * 2, CancellationToken.None).ConfigureAwait(false); // the round trip itself carries the token
                }
                catch (TimeoutException)
                {
                    // Npgsql's own timeout first sends a cancel over a new connection, which a dead path holds up as long as
                    // the client's timeouts allow (40 s with the defaults): the connection is given up now, and left alone
                    // until the round trip ends (below), since it is not to be used by two callers at once.
                    if (!cancellationToken.IsCancellationRequested)
                    {
                        late();
                    }
                }

                await answered.ConfigureAwait(false);
            }
        }
    }
}
