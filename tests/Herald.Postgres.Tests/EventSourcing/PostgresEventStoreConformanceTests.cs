using Herald.EventSourcing;
using Herald.Messages;
using Herald.Postgres.EventSourcing;
using Herald.Conformance.EventSourcing;

namespace Herald.Postgres.Tests.EventSourcing;

/// <summary>The whole event store suite on PostgreSQL with the default options (but a longer own-appends wait), transactions held open in the torture test.</summary>
public sealed class PostgresEventStoreConformanceTests(PostgresSchemaFixture fixture) : PostgresConformance(fixture), IClassFixture<PostgresSchemaFixture>
{
    protected override int TortureAppendsPerWriter => 64;

    protected override PostgresStoreOptions Options(string schema) => new() { Schema = schema };

    [Fact]
    public async Task SetCheckpoint_OfAnIdHoldingU0000_IsRefusedNamingTheId()
    {
        // PostgreSQL's text cannot hold it: the write failed with a bare 22021.
        var refused = await Assert.ThrowsAsync<ArgumentException>(async () => await Checkpoints.SetCheckpointAsync(NewCategory() + "\0", 1));

        Assert.Equal("subscriptionId", refused.ParamName);
        Assert.Contains("subscription id", refused.Message, StringComparison.Ordinal);
    }
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

    protected override async Task<IEventStore> CreateStoreAsync()
    {
        // The suite reads its own appends, which the cluster-wide horizon holds back while any older writing transaction is
        // open; other runs sharing the server hold some for seconds on purpose (torture, visibility tests), far longer when
        // it is loaded. The store's default 10 s wait then gave up and the read came back short (ReadAll_WithMaxCount_StopsThere
        // failed so once); a minute outlasts those holds.
        var options = Options(fixture.Schema);
        options.ReadOwnAppendsTimeout = TimeSpan.FromMinutes(1);
        return await PostgresEventStore.CreateAsync(fixture.DataSource, options);
    }

    // A unit of work writes its append at once, inside its transaction, and holds that open until it ends: the held
    // transaction the torture test needs, on the path handlers use.
    protected override async Task<IOpenAppend?> BeginOpenAppendAsync(string stream, ExpectedVersion expectedVersion, IReadOnlyList<Envelope> events, CancellationToken cancellationToken = default) =>
        await HeldAppend.BeginAsync((PostgresEventStore)Store, stream, expectedVersion, events, cancellationToken);
}
