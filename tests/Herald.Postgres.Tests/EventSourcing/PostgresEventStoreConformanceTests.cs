using Herald.EventSourcing;
using Herald.Messages;
using Herald.Postgres.EventSourcing;
using Herald.Conformance.EventSourcing;
using Herald.Persistence;

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

    public static TheoryData<string> EnvelopeTextFields => ["message type", "correlation id", "causation id", "user id", "partition key", "content type"];

    [Theory]
    [MemberData(nameof(EnvelopeTextFields))]
    public async Task Append_OfAnEventWhoseTextAttributeHoldsU0000_IsRefusedNamingStreamAndField_AndWritesNothing(string field)
    {
        // PostgreSQL's text cannot hold it: the append failed with a bare 22021 naming neither. SQLite and memory store it;
        // here the event is refused, never stored altered.
        var stream = NewStream();
        var good = NewEvents(1)[0];
        var bad = WithText(good, field, "order-placed\0");
        var store = (PostgresEventStore)Store;
        var unitOfWork = store.BeginUnitOfWork();

        var alone = await Assert.ThrowsAsync<ArgumentException>(async () => await Store.AppendAsync(stream, ExpectedVersion.NoStream, [NewEvents(1)[0], bad]));
        var inUnit = await Assert.ThrowsAsync<ArgumentException>(async () => await store.AppendAsync(stream, ExpectedVersion.NoStream, [bad], unitOfWork));
        await unitOfWork.CommitAsync();

        Assert.All([alone, inUnit], refused =>
        {
            Assert.Equal("events", refused.ParamName);
            Assert.Contains($"The {field} 'order-placed\\u0000' of event {bad.MessageId} of the append to '{stream}' holds the character U+0000", refused.Message, StringComparison.Ordinal);
        });
        Assert.Equal(0, await Store.GetStreamVersionAsync(stream));
    }

    [Fact]
    public async Task Append_OfHeadersHoldingU0000_ReadsThemBackExactly()
    {
        // jsonb holds no U+0000 either; headers holding one are stored as pieces, so the event is kept exactly, as elsewhere.
        var stream = NewStream();
        var headers = new Dictionary<string, string> { ["trace\0id"] = "a\0b", ["plain"] = "\0" };
        await Store.AppendAsync(stream, ExpectedVersion.NoStream, [NewEvents(1)[0] with { Headers = headers }]);

        Assert.Equal(headers, (await ReadStreamAsync(stream)).Single().Envelope.Headers);
    }

    [Fact]
    public async Task SaveSnapshot_OfAStateTypeHoldingU0000_IsRefusedNamingIt()
    {
        // The save failed with a bare 22021.
        var stream = NewStream();
        var snapshot = new Snapshot(stream, 1, "counter\0state", 1, "{}"u8.ToArray(), DateTimeOffset.UnixEpoch);

        var refused = await Assert.ThrowsAsync<ArgumentException>(async () => await Snapshots.SaveSnapshotAsync(snapshot));

        Assert.Equal("snapshot", refused.ParamName);
        Assert.Contains($"state type 'counter\\u0000state' of the snapshot of '{stream}' holds the character U+0000", refused.Message, StringComparison.Ordinal);
        Assert.Null(await Snapshots.LoadSnapshotAsync(stream));
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

    protected override async Task<IEventStore> CreateStoreAsync(TimeProvider timeProvider)
    {
        // The suite reads its own appends, which the cluster-wide horizon holds back while any older writing transaction is
        // open; other runs sharing the server hold some for seconds on purpose (torture, visibility tests), far longer when
        // it is loaded. The store's default 10 s wait then gave up and the read came back short (ReadAll_WithMaxCount_StopsThere
        // failed so once); a minute outlasts those holds.
        var options = Options(fixture.Schema);
        options.ReadOwnAppendsTimeout = TimeSpan.FromMinutes(1);
        options.TimeProvider = timeProvider;
        return await PostgresEventStore.CreateAsync(fixture.DataSource, options);
    }

    protected override IUnitOfWork BeginUnitOfWork(IEventStore store) => ((PostgresEventStore)store).BeginUnitOfWork();

    protected override async Task<bool> OverwriteHeadersColumnAsync(long position, string? json)
    {
        var value = json is null ? "NULL" : $"'{json}'::jsonb";
        await PostgresTestDatabase.ExecuteAsync($"UPDATE \"{fixture.Schema}\".events SET headers = {value} WHERE position = {position}");
        return true;
    }

    // A unit of work writes its append at once, inside its transaction, and holds that open until it ends: the held
    // transaction the torture test needs, on the path handlers use.
    protected override async Task<IOpenAppend?> BeginOpenAppendAsync(string stream, ExpectedVersion expectedVersion, IReadOnlyList<Envelope> events, CancellationToken cancellationToken = default) =>
        await HeldAppend.BeginAsync((PostgresEventStore)Store, stream, expectedVersion, events, cancellationToken);
}
