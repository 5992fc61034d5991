using Herald.Postgres.Transport;
using Herald.Conformance.Transport;
using Herald.Transport;
using Xunit.Abstractions;

namespace Herald.Postgres.Tests.Transport;

/// <summary>
/// The whole transport suite on the PostgreSQL queue, on real time, in one schema for the class. A second transport the suite
/// asks for is a second instance with its own connection pool and LISTEN connection, as another process would be.
/// </summary>
public sealed class PostgresQueueTransportConformanceTests(PostgresSchemaFixture schema, ITestOutputHelper output)
    : TransportConformance(output), IClassFixture<PostgresSchemaFixture>
{
    // Whole seconds are for brokers that round delays; a visible-at column is exact, so a shorter delay keeps the run short.
    protected override TimeSpan TestDelay => TimeSpan.FromSeconds(1);

    protected override async Task<ITransport> CreateTransportAsync() =>
        await PostgresQueueTransportFactory.CreateAsync(PostgresTestDatabase.ConnectionString, o =>
        {
            o.Schema = schema.Schema;
            o.MaxMessageBytes = 64 * 1024;
        });
}
