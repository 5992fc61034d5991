using Herald.Hosting;
using Microsoft.Extensions.DependencyInjection;

namespace Herald.Postgres.Tests.Transport;

/// <summary>How the queue suites' hosts use PostgreSQL: the store and the queue in one schema of the test's own.</summary>
internal static class PostgresQueueHosting
{
    /// <summary>The store and the queue in <paramref name="schema"/>, the queue polling every 100 ms besides its notifications.</summary>
    public static HeraldBuilder UsePostgresStoreAndQueue(this HeraldBuilder herald, string schema) => herald
        .UsePostgres(PostgresTestDatabase.ConnectionString, o => o.Schema = schema)
        .UsePostgresQueue(PostgresTestDatabase.ConnectionString, o =>
        {
            o.Schema = schema;
            o.PollInterval = TimeSpan.FromMilliseconds(100);
        });
}
