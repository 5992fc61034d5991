using Herald.EventSourcing;
using Herald.Messages;
using Herald.Postgres.EventSourcing;
using Herald.Conformance.EventSourcing;

namespace Herald.Postgres.Tests.EventSourcing;

/// <summary>The whole event store suite on PostgreSQL with the default options, transactions held open in the torture test.</summary>
public sealed class PostgresEventStoreConformanceTests(PostgresSchemaFixture fixture) : PostgresConformance(fixture), IClassFixture<PostgresSchemaFixture>
{
    protected override int TortureAppendsPerWriter => 64;

    protected override PostgresStoreOptions Options(string schema) => new() { Schema = schema };
}

/// <summary>The suite again with many small groups in flight at once, so grouped commits race each other for stream locks.</summary>
public sealed class PostgresEventStoreWithManyWritersConformanceTests(PostgresSchemaFixture fixture) : PostgresConformance(fixture), IClassFixture<PostgresSchemaFixture>
{
    protected override PostgresStoreOptions Options(string schema) => new() { Schema = schema, AppendWriters = 4, MaxAppendsPerCommit = 4 };
}

/// <summary>Runs <see cref="EventStoreConformance"/> on a schema of the test class's own.</summary>
public abstract class PostgresConformance(PostgresSchemaFixture fixture) : EventStoreConformance
{
    protected override bool SupportsOpenTransactions => true;

    protected abstract PostgresStoreOptions Options(string schema);

    protected override async Task<IEventStore> CreateStoreAsync() =>
        await PostgresEventStore.CreateAsync(fixture.DataSource, Options(fixture.Schema));

    // A unit of work writes its append at once, inside its transaction, and holds that open until it ends: the held
    // transaction the torture test needs, on the path handlers use.
    protected override async Task<IOpenAppend?> BeginOpenAppendAsync(string stream, ExpectedVersion expectedVersion, IReadOnlyList<Envelope> events, CancellationToken cancellationToken = default) =>
        await HeldAppend.BeginAsync((PostgresEventStore)Store, stream, expectedVersion, events, cancellationToken);
}
