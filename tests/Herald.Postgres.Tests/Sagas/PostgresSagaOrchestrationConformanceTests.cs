using Herald.Conformance.Sagas;
using Herald.Hosting;
using Microsoft.Extensions.DependencyInjection;

namespace Herald.Postgres.Tests.Sagas;

/// <summary>Orchestrated sagas on PostgreSQL: each test gets a schema of its own, shared by its two hosts and dropped at the end.</summary>
public sealed class PostgresSagaOrchestrationConformanceTests : SagaOrchestrationConformance, IAsyncLifetime
{
    private readonly OwnedSchemas _schemas = new();

    protected override string NewStore() => _schemas.New();

    protected override void UseStore(HeraldBuilder herald, string store) => herald.UsePostgres(PostgresTestDatabase.ConnectionString, o => o.Schema = store);

    public Task InitializeAsync() => Task.CompletedTask;

    public Task DisposeAsync() => _schemas.DisposeAsync().AsTask();
}
