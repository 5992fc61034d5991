using Herald.EventSourcing;
using Herald.Messages;
using Herald.Postgres.EventSourcing;
using Herald.Testing.EventSourcing;

namespace Herald.Postgres.Tests.EventSourcing;

/// <summary>The whole event store suite on PostgreSQL, with transactions held open in the torture test.</summary>
public sealed class PostgresEventStoreConformanceTests(PostgresSchemaFixture fixture) : EventStoreConformance, IClassFixture<PostgresSchemaFixture>
{
    protected override bool SupportsOpenTransactions => true;

    protected override async Task<IEventStore> CreateStoreAsync() =>
        await PostgresEventStore.CreateAsync(fixture.DataSource, new PostgresStoreOptions { Schema = fixture.Schema });

    protected override async Task<IOpenAppend?> BeginOpenAppendAsync(string stream, ExpectedVersion expectedVersion, IReadOnlyList<Envelope> events, CancellationToken cancellationToken = default) =>
        new HeldAppend(await ((PostgresEventStore)Store).BeginAppendAsync(stream, expectedVersion, events, cancellationToken));

    private sealed class HeldAppend(OpenAppend open) : IOpenAppend
    {
        public Task CommitAsync(CancellationToken cancellationToken = default) => open.CommitAsync(cancellationToken);

        public Task RollbackAsync(CancellationToken cancellationToken = default) => open.RollbackAsync(cancellationToken);

        public ValueTask DisposeAsync() => open.DisposeAsync();
    }
}
